"""Warm start: a fresh model's variables initialised from another model's checkpoint.

tf.estimator's `warm_start_from`, for fine-tuning and for growing a model from a
smaller one. It happens once, on the fresh state of step 0: a model_dir that
already has checkpoints resumes from them instead (the Estimator decides). The
variables that `WarmStartSettings` selects are read from the source checkpoint
as host numpy arrays, so any mesh may have written it, and are placed with the
shardings of the fresh state. Every other variable keeps its initialisation;
the step stays 0 and the RNG key stays this model's. Optimizer state is carried
only when asked.

Names are those of `Estimator.get_variable_names()` ('params/Dense_0/kernel',
'batch_stats/BatchNorm_0/mean'). A shape or dtype that differs from the
source is an error naming the variable, never a silent cast or crop.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping, Sequence

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from jestimator.checkpoint import CheckpointReadError, CheckpointStore
from jestimator.checkpoint_retention import finished_steps
from jestimator.reporting import logger
from jestimator.training.train_state import TrainState
from jestimator.tree_paths import path_name


@dataclasses.dataclass(frozen=True)
class WarmStartSettings:
  """Which variables to initialise from which checkpoint (tf.estimator.WarmStartSettings).

  Args:
    ckpt_to_initialize_from: a model_dir (its newest checkpoint when training
      starts) or one checkpoint, `<model_dir>/<step>`.
    vars_to_warm_start: a regex matched from the start of each name: the
      default '.*' takes every variable of the model (params and collections
      such as batch_stats; tf.estimator's took trainable ones only: write
      'params/' for that). Selected variables that the source lacks keep their
      init. Or a list of names (or regexes, each of which must select one):
      then each selected variable must be in the source.
    var_name_to_prev_var_name: `{name here: name in the source}` for variables
      that were renamed; it does not select (vars_to_warm_start does).
    warm_start_optimizer: also copy the optimizer state of the warm-started
      params (Adam's moments) and the optimizer's own leaves (Adam's count);
      the source must have been trained with the same kind of optimizer.

  Example: `WarmStartSettings('/models/a', 'params/Dense_0/')` copies the first
  Dense layer of model a's newest checkpoint.
  """

  ckpt_to_initialize_from: str
  vars_to_warm_start: str | Sequence[str] = '.*'
  var_name_to_prev_var_name: Mapping[str, str] | None = None
  warm_start_optimizer: bool = False

  def __post_init__(self):
    path = self.ckpt_to_initialize_from
    if not isinstance(path, (str, os.PathLike)):
      raise TypeError(f'WarmStartSettings: ckpt_to_initialize_from must be a path, got {path!r}.')
    object.__setattr__(self, 'ckpt_to_initialize_from', os.fspath(path))
    select = self.vars_to_warm_start
    entries = [select] if isinstance(select, str) else select
    if not isinstance(entries, (list, tuple)) or not all(isinstance(e, str) for e in entries):
      raise TypeError('WarmStartSettings: vars_to_warm_start must be a regex or a list of '
                      f'variable names, got {select!r}.')
    if not isinstance(select, str):
      object.__setattr__(self, 'vars_to_warm_start', tuple(select))
    for entry in entries:
      try:
        re.compile(entry)
      except re.error as e:
        raise ValueError(f'WarmStartSettings: vars_to_warm_start entry {entry!r} is not a '
                         f'regex: {e}.') from e
    if 'global_step' in entries:
      raise ValueError("WarmStartSettings: 'global_step' is not warm-started: a warm-started "
                       'model trains from step 0.')
    renames = self.var_name_to_prev_var_name or {}
    if not isinstance(renames, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in renames.items()):
      raise TypeError('WarmStartSettings: var_name_to_prev_var_name must map names to names, '
                      f'got {renames!r}.')
    object.__setattr__(self, 'var_name_to_prev_var_name', dict(renames))
    if not isinstance(self.warm_start_optimizer, bool):
      raise TypeError('WarmStartSettings: warm_start_optimizer must be a bool, got '
                      f'{self.warm_start_optimizer!r}.')


def warm_start_settings(warm_start_from: Any) -> WarmStartSettings | None:
  """`warm_start_from` (a path or WarmStartSettings) as WarmStartSettings, its checkpoint
  checked now (it exists and holds a finished checkpoint); None stays None."""
  if warm_start_from is None:
    return None
  if isinstance(warm_start_from, (str, os.PathLike)):
    warm_start_from = WarmStartSettings(warm_start_from)
  if not isinstance(warm_start_from, WarmStartSettings):
    raise TypeError('warm_start_from must be a path (a model_dir or <model_dir>/<step>) or '
                    f'WarmStartSettings, got {warm_start_from!r}.')
  path = os.path.abspath(warm_start_from.ckpt_to_initialize_from)
  _source(path)  # raises now, not when training starts
  return dataclasses.replace(warm_start_from, ckpt_to_initialize_from=path)


def _source(path: str) -> tuple[str, int]:
  """(model_dir, step) of the checkpoint at `path`: that step, or the newest of a model_dir."""
  if not os.path.isdir(path):
    raise ValueError(f'warm_start_from: {path!r} ' + (
        'is a file' if os.path.exists(path) else 'does not exist') + ': give a trained '
        'model_dir, or one of its checkpoints, <model_dir>/<step>.')
  parent, name = os.path.split(path)
  if name.isdigit() and int(name) in [i.step for i in finished_steps(parent)]:
    return parent, int(name)
  steps = [i.step for i in finished_steps(path)]
  if not steps:
    raise ValueError(f'warm_start_from: {path!r} holds no finished checkpoint: give a model_dir '
                     'that has been trained, or one of its checkpoints, <model_dir>/<step>.')
  return path, steps[-1]


def warm_start(state: TrainState, settings: WarmStartSettings) -> TrainState:
  """`state` (a fresh TrainState) with the selected variables copied from the source.

  Each copy takes the sharding of the leaf it replaces. Raises ValueError,
  before anything is copied, naming every selected variable (or optimizer
  leaf) whose shape or dtype differs from the source's, and any explicitly
  named variable the source lacks.
  """
  directory, step = _source(settings.ckpt_to_initialize_from)
  store = CheckpointStore(directory, None, False)
  try:
    checkpoint = store.path(step)
    variables = _named(state.variables)
    saved = store.variables_by_name(step, values=False)
    chosen = _choose(settings, sorted(variables), saved, checkpoint)
    _check(((n, variables[n], saved[p]) for n, p in chosen.items()), checkpoint)
    values = store.variables_by_name(step)
  finally:
    store.close()
  copied = _place(state.variables, {n: values[p] for n, p in chosen.items()})
  params = copied.pop('params', {})
  state = state.replace(params=params, model_state=copied)
  if settings.warm_start_optimizer:
    state = state.replace(opt_state=_warm_start_optimizer(state, chosen, checkpoint))
  renamed = [f'{n} (from {p})' for n, p in chosen.items() if n != p]
  logger.info('Warm-started %d of %d variables from %s: %s.', len(chosen), len(variables),
              checkpoint, ', '.join([n for n, p in chosen.items() if n == p] + renamed))
  fresh = sorted(set(variables) - set(chosen))
  if fresh:
    logger.info('Not warm-started (their fresh initialisation stays): %s.', ', '.join(fresh))
  if not settings.warm_start_optimizer:
    logger.info('The optimizer state starts fresh (WarmStartSettings(warm_start_optimizer=True) '
                'would copy it).')
  return state


def _named(tree) -> dict[str, Any]:
  return {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _choose(settings: WarmStartSettings, names: list[str], saved: Mapping[str, Any],
            checkpoint: str) -> dict[str, str]:
  """{name here: name in the source} of the variables to copy, the selection validated."""
  select = settings.vars_to_warm_start
  explicit = not isinstance(select, str)
  selected = []
  for entry in (select if explicit else [select]):
    found = [entry] if entry in names else [n for n in names if re.match(entry, n)]
    if explicit and not found:
      raise ValueError(f'vars_to_warm_start: {entry!r} is no variable of this model (nor a '
                       f'regex matching one); its variables: {", ".join(names)}.')
    selected += [n for n in found if n not in selected]
  renames = settings.var_name_to_prev_var_name
  unused = sorted(set(renames) - set(selected))
  if unused:
    raise ValueError(f'var_name_to_prev_var_name renames {", ".join(unused)}, which '
                     f'vars_to_warm_start={select!r} does not select (this model\'s variables: '
                     f'{", ".join(names)}).')
  chosen = {n: renames.get(n, n) for n in sorted(selected)}
  absent = {n: p for n, p in chosen.items() if p not in saved}
  named = [n for n in absent if explicit or n in renames]
  if named:
    raise ValueError(
        f'Warm start: {", ".join(f"{absent[n]!r}" for n in named)} not in the checkpoint '
        f'{checkpoint}; its variables: {", ".join(sorted(saved))}.')
  chosen = {n: p for n, p in chosen.items() if n not in absent}
  if absent:
    logger.info('Warm start: not in the checkpoint %s, so not warm-started: %s.', checkpoint,
                ', '.join(absent))
  if not chosen:
    raise ValueError(
        f'Warm start from {checkpoint} would copy nothing: vars_to_warm_start={select!r} selects '
        f'none of its variables ({", ".join(sorted(saved))}; this model\'s: {", ".join(names)}).')
  return chosen


def _describe(x) -> str:
  return f'{np.dtype(x.dtype).name}{list(x.shape)}'


def _check(triples, checkpoint: str) -> None:
  """Raises naming every (name, here, saved) whose shape or dtype differ."""
  wrong = [f'{n}: this model has {_describe(a)}, the checkpoint {_describe(b)}'
           for n, a, b in triples if (tuple(a.shape), np.dtype(a.dtype)) !=
           (tuple(b.shape), np.dtype(b.dtype))]
  if wrong:
    raise ValueError(f'Warm start from {checkpoint}: shapes or dtypes differ: '
                     + '; '.join(wrong) + '. Leave these variables out of vars_to_warm_start '
                     '(or map them to matching ones with var_name_to_prev_var_name).')


def _place(tree, values: Mapping[str, np.ndarray]):
  """`tree` with the leaves named in `values` replaced, each on its old leaf's sharding."""

  def leaf(path, old):
    new = values.get(path_name(path))
    if new is None:
      return old
    sharding = getattr(old, 'sharding', None)
    return jax.device_put(new, sharding) if sharding is not None else jax.numpy.asarray(new)

  return jax.tree_util.tree_map_with_path(leaf, tree)


def _warm_start_optimizer(state: TrainState, chosen: Mapping[str, str], checkpoint: str):
  """`state.opt_state` with the slots of the warm-started params (a leaf whose name ends in
  a param's path, e.g. '0/mu/Dense_0/kernel') and the optimizer's own leaves ('0/count')
  copied from the checkpoint's; the slots of other params stay fresh."""
  saved = _named(_saved_train_item(checkpoint)['opt_state'])
  params = sorted((n.split('/', 1)[1] for n in _named(state.variables) if
                   n.startswith('params/')), key=len, reverse=True)
  wanted = {}
  for name in _named(state.opt_state):
    param = next((p for p in params if name == p or name.endswith('/' + p)), None)
    if param is None:
      wanted[name] = name  # the optimizer's own leaf
    elif 'params/' + param in chosen:
      prev = chosen['params/' + param].split('/', 1)[1]
      wanted[name] = name[:len(name) - len(param)] + prev
  missing = sorted(p for p in wanted.values() if p not in saved)
  if missing:
    raise ValueError(f'Warm start of the optimizer state from {checkpoint}: '
                     f'{", ".join(missing)} not in its optimizer state '
                     f'({", ".join(sorted(saved))}); was it trained with another optimizer? '
                     'Use warm_start_optimizer=False.')
  here = _named(state.opt_state)
  _check(((n, here[n], saved[p]) for n, p in wanted.items()), checkpoint)
  logger.info('Warm-started the optimizer state from %s: %s.', checkpoint, ', '.join(wanted))
  return _place(state.opt_state, {n: saved[p] for n, p in wanted.items()})


def _saved_train_item(checkpoint: str) -> dict:
  """The `train` item of a checkpoint (step, opt_state, rng) as host numpy arrays, read on
  one local device whatever mesh wrote it."""
  directory = epath.Path(checkpoint) / 'train'
  reader = ocp.StandardCheckpointHandler()
  try:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                            reader.metadata(directory).tree,
                            is_leaf=lambda m: hasattr(m, 'shape') and hasattr(m, 'dtype'))
    return jax.tree.map(np.asarray,
                        reader.restore(directory, args=ocp.args.StandardRestore(abstract)))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointReadError(f'The optimizer state of checkpoint {checkpoint} could not be '
                              f'read for warm start: {type(e).__name__}: {e}') from e
  finally:
    reader.close()
