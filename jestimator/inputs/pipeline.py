"""The host side of input: an input_fn's dataset as an iterator of numpy batches.

`InputPipeline` wraps what an input_fn returned -- a `tf.data.Dataset` or any
Python iterable of numpy pytrees -- and yields `(features, labels)` as numpy.
Its position is checkpointable: a tf.data iterator through its own
`tf.train.Checkpoint` (shuffle buffers and RNG state included), a Python
iterable by the count of batches consumed (replayed on restore). So a resumed
run sees exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import jax
import numpy as np
import tensorflow as tf

from jestimator.spec import ModeKeys


def _to_numpy(x):
  return x._numpy() if hasattr(x, '_numpy') else np.asarray(x)


def _check_element_spec(dataset) -> None:
  """Rejects sparse/ragged components up front (they cannot become dense arrays)."""
  for spec in tf.nest.flatten(dataset.element_spec):
    if isinstance(spec, (tf.SparseTensorSpec, tf.RaggedTensorSpec)):
      raise TypeError(f'{type(spec).__name__[:-4]} inputs are not supported yet: densify them '
                      'in the input_fn (e.g. tf.sparse.to_dense).')


def _check_numeric(tree, what: str) -> None:
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if leaf.dtype.kind in 'OSU':
      name = jax.tree_util.keystr(path) or what
      raise TypeError(f'{what} {name} holds strings ({leaf.dtype}); JAX takes numbers only. '
                      'Map strings to ids in the input_fn (e.g. a tf lookup table).')
    if leaf.ndim == 0:
      name = jax.tree_util.keystr(path) or what
      raise ValueError(f'{what} {name} is a scalar; every feature and label needs a leading '
                       'batch dimension (batch the dataset).')


class InputPipeline:
  """Iterator of `(features, labels)` numpy batches with a saveable position.

  Args:
    source: a `tf.data.Dataset` or a Python iterable; each element is
      `(features, labels)` or features alone.
    mode: a `ModeKeys` value; in PREDICT labels are dropped.
  """

  def __init__(self, source: Any, mode: str):
    self.mode = mode
    self.is_tf = isinstance(source, tf.data.Dataset)
    if self.is_tf:
      _check_element_spec(source)
      self._iterator = iter(source)
      self._cardinality = int(source.cardinality())
    elif hasattr(source, '__iter__'):
      self._source = source
      self._iterator = iter(source)
      self._cardinality = len(source) if hasattr(source, '__len__') else -1
    else:
      raise TypeError('input_fn must return a tf.data.Dataset or an iterable of numpy '
                      f'batches, got {type(source).__name__}.')
    self.position = 0
    self._checked = False

  @property
  def num_batches(self) -> int | None:
    """The number of batches if known (finite tf.data cardinality or `len`)."""
    return self._cardinality if self._cardinality >= 0 else None

  def __iter__(self) -> Iterator:
    return self

  def __next__(self) -> tuple[Any, Any]:
    try:
      element = next(self._iterator)
    except tf.errors.InvalidArgumentError as e:  # a failed check in the tf.data graph
      raise ValueError(f'the input pipeline rejected a batch: {e.message}') from None
    self.position += 1
    if self.is_tf:
      element = jax.tree.map(_to_numpy, element)
    if isinstance(element, tuple) and len(element) == 2:
      features, labels = element
    else:
      features, labels = element, None
    if self.mode == ModeKeys.PREDICT:
      labels = None
    if not self._checked:
      _check_numeric(features, 'feature')
      if labels is not None:
        _check_numeric(labels, 'label')
      self._checked = True
    return features, labels

  # -- position ------------------------------------------------------------

  def save(self, directory: str) -> None:
    """Writes the tf.data iterator state under `directory` (no-op for iterables)."""
    if self.is_tf:
      os.makedirs(directory, exist_ok=True)
      tf.train.Checkpoint(iterator=self._iterator).write(os.path.join(directory, 'iterator'))

  def restore(self, directory: str | None, position: int) -> None:
    """Moves to a saved position: tf.data state from `directory`, else replay."""
    if self.is_tf:
      if directory is None:
        raise ValueError('the checkpoint has no tf.data iterator state to restore.')
      tf.train.Checkpoint(iterator=self._iterator).read(
          os.path.join(directory, 'iterator')).assert_consumed()
    else:
      for _ in range(position):
        next(self._iterator)
    self.position = position
