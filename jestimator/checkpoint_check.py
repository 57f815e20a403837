"""Does a checkpoint fit this model? Names what differs before orbax restores anything.

orbax reports a checkpoint written by another model as "tree structures do
not match" (or a shape error deep in tensorstore). Here the saved tree (from
the checkpoint's metadata: no array is read) is compared with the state this
model builds, by variable name ('params/Dense_0/kernel', as
`Estimator.get_variable_names` gives them): variables missing from the
checkpoint, variables the model does not have, and shape or dtype
differences. The optimizer state is compared the same way but reported on its
own: then the model is the same and the optimizer changed between runs.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jestimator.tree_paths import path_name

_SHOWN = 8  # names listed per kind of difference
_EMPTY = ('no arrays',)


class CheckpointMismatchError(ValueError):
  """A checkpoint does not fit the model or the optimizer that tries to restore it."""


def _is_array(x) -> bool:
  return hasattr(x, 'shape') and hasattr(x, 'dtype')


def _is_empty(x) -> bool:
  """A node without arrays: None in orbax's metadata, e.g. optax's EmptyState here."""
  return not _is_array(x) and not jax.tree.leaves(x, is_leaf=_is_array)


def _leaves(tree: Any, prefix: str = '', empty_nodes: bool = False) -> dict[str, tuple]:
  """name -> (shape, dtype) of every array of `tree` (arrays, ShapeDtypeStructs, metadata);
  with `empty_nodes`, also name -> _EMPTY for every node that holds no array."""
  is_leaf = (lambda x: _is_array(x) or _is_empty(x)) if empty_nodes else _is_array
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]
  return {prefix + path_name(path): ((tuple(x.shape), np.dtype(x.dtype)) if _is_array(x)
                                     else _EMPTY)
          for path, x in flat if _is_array(x) or empty_nodes}


def _listed(items: list[str]) -> str:
  more = f' and {len(items) - _SHOWN} more' if len(items) > _SHOWN else ''
  return ', '.join(items[:_SHOWN]) + more


def differences(saved: Any, expected: Any, prefix: str = '', ours: str = 'this model',
                empty_nodes: bool = False) -> str:
  """What differs between a saved tree and the expected one, by name; '' if nothing.
  With `empty_nodes`, nodes without arrays count too (a chain's EmptyState)."""
  saved, expected = _leaves(saved, prefix, empty_nodes), _leaves(expected, prefix, empty_nodes)
  missing = sorted(set(expected) - set(saved))
  extra = sorted(set(saved) - set(expected))
  changed = [n for n in sorted(set(saved) & set(expected)) if saved[n] != expected[n]]
  named = lambda n, tree: repr(n) + (' (no arrays)' if tree[n] == _EMPTY else '')
  shape = lambda v: 'no arrays' if v == _EMPTY else f'{v[0]} {v[1]}'
  parts = []
  if missing:
    parts.append(f'not in the checkpoint: {_listed([named(n, expected) for n in missing])}')
  if extra:
    parts.append(f'in the checkpoint but not in {ours}: '
                 f'{_listed([named(n, saved) for n in extra])}')
  if changed:
    shown = [f'{n!r} (checkpoint {shape(saved[n])}, {ours} {shape(expected[n])})'
             for n in changed]
    parts.append(f'different shape or dtype: {_listed(shown)}')
  return '; '.join(parts)


def check_restorable(path: str, saved_variables: Any, variables: Any, saved_opt_state: Any,
                     opt_state: Any, empty_nodes: bool = False) -> None:
  """Raises CheckpointMismatchError naming every difference between the checkpoint at
  `path` (its metadata trees) and the model's variables and optimizer state.

  Arrays are compared first; `empty_nodes` also compares the nodes that hold
  none, to name why orbax found the same arrays nested differently (adam ->
  adamw adds an EmptyState). Not the default: orbax may store an empty node
  in ways this name-based view does not foresee.
  """
  diff = differences(saved_variables, variables, empty_nodes=empty_nodes)
  if diff:
    raise CheckpointMismatchError(
        f'The checkpoint {path} was written by another model: its variables differ from '
        f"this model_fn's ({diff}). Train this model in a new model_dir, or restore the "
        'checkpoint with the model_fn and params that wrote it.')
  diff = differences(saved_opt_state, opt_state, 'opt_state/', 'this optimizer', empty_nodes)
  if diff:
    raise CheckpointMismatchError(
        f'The optimizer state in the checkpoint {path} differs from the state of the '
        f'optimizer the model_fn returns now: the optimizer changed between runs ({diff}). '
        'Train with the optimizer that wrote the checkpoint, or train with the new one in a '
        "new model_dir, warm-starting it from this checkpoint's variables "
        '(Estimator.get_variable_value).')
