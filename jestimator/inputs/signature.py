"""The input signature a model was built with, and the check of every batch against it.

The signature is recorded from the first batch (and stored in checkpoint
metadata), so a later batch with a missing feature, another shape or another
dtype is rejected on the host, before anything compiles, with an error that
names the feature. The leading (batch) dimension may vary.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jestimator.tree_paths import path_name


def leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """name -> (shape, dtype) of every leaf; names are key paths like 'x' or 'a/b'."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    dtype = leaf.dtype if hasattr(leaf, 'dtype') else np.asarray(leaf).dtype
    out[path_name(path)] = (tuple(np.shape(leaf)), str(dtype))
  return out


def _fmt(shape, dtype) -> str:
  return f'({", ".join(["batch", *map(str, shape[1:])])}) {dtype}'


class Signature:
  """Per-leaf shapes (batch dim free) and dtypes of features and labels."""

  def __init__(self, features: dict, labels: dict | None):
    self.features = features
    self.labels = labels
    self._fast = None

  @classmethod
  def of(cls, features: Any, labels: Any) -> 'Signature':
    """The signature of this batch (whose features and labels must agree on its size)."""
    signature = cls(leaf_specs(features), None if labels is None else leaf_specs(labels))
    signature.check(features, labels)
    return signature

  def to_json(self) -> dict:
    enc = lambda d: None if d is None else {k: [list(s), t] for k, (s, t) in d.items()}
    return {'features': enc(self.features), 'labels': enc(self.labels)}

  @classmethod
  def from_json(cls, data: dict) -> 'Signature':
    dec = lambda d: None if d is None else {k: (tuple(s), t) for k, (s, t) in d.items()}
    return cls(dec(data['features']), dec(data['labels']))

  def check(self, features: Any, labels: Any, *, check_labels: bool = True) -> None:
    """Raises ValueError naming the first feature/label that does not match.

    A batch laid out like the last one that passed is accepted by comparing
    one tuple (a few microseconds), so the hot loop can check every batch.
    """
    leaves, treedef = jax.tree.flatten((features, labels if check_labels else None))
    shapes = [np.shape(x) for x in leaves]
    if len({s[:1] for s in shapes}) > 1:
      _raise_batch_mismatch(features, labels if check_labels else None)
    fast = (treedef, tuple((s[1:], x.dtype) for s, x in zip(shapes, leaves)))
    if fast == self._fast:
      return
    _check_part('feature', self.features, leaf_specs(features))
    if check_labels and self.labels is not None:
      if labels is None:
        raise ValueError('labels are missing: the model was built with labels, got None.')
      _check_part('label', self.labels, leaf_specs(labels))
    self._fast = fast


def _raise_batch_mismatch(features: Any, labels: Any) -> None:
  """Every feature and label must hold the same number of examples: name two that differ."""
  sizes = [(f'{kind} {name!r}' if name else f'{kind}s', shape[0] if shape else None)
           for kind, tree in (('feature', features), ('label', labels)) if tree is not None
           for name, (shape, _) in leaf_specs(tree).items()]
  (first, n), (other, m) = sizes[0], next(x for x in sizes if x[1] != sizes[0][1])
  raise ValueError(f'{first} has {n} examples but {other} has {m}: every feature and label of '
                   'a batch needs the same batch size (leading dimension).')


def _check_part(kind: str, expected: dict, got: dict) -> None:
  missing = sorted(set(expected) - set(got))
  if missing:
    raise ValueError(f'{kind} {missing[0]!r} is missing: the model was built with {kind}s '
                     f'{sorted(expected)}, got {sorted(got)}.')
  extra = sorted(set(got) - set(expected))
  if extra:
    raise ValueError(f'unexpected {kind} {extra[0]!r}: the model was built with {kind}s '
                     f'{sorted(expected)}, got {sorted(got)}.')
  for name, (shape, dtype) in expected.items():
    g_shape, g_dtype = got[name]
    if g_shape[1:] != tuple(shape[1:]) or len(g_shape) != len(shape) or g_dtype != dtype:
      shown = f'{kind} {name!r}' if name else f'{kind}s'  # one bare array: 'labels'
      raise ValueError(f'{shown}: expected shape {_fmt(shape, dtype)}, '
                       f'got {_fmt(g_shape, g_dtype)}.')
