"""The host half's plumbing: one batch's raw features, and SparseTensor <-> padded dense.

Everything here is TF ops; it runs inside the `dataset.map` the Estimator
builds around an input_fn (graph mode) or eagerly (`transform_features`,
Python-iterable input_fns). Widths must be static so the device sees one
shape per feature and compiles once.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from jestimator.tf_import import tf

_INT32 = np.iinfo(np.int32)


class HostCache:
  """tf's FeatureTransformationCache: one batch's raw features and per-column results.

  Args:
    features: the raw features (tf.Tensor, tf.SparseTensor, tf.RaggedTensor or numpy).
    sparse_lengths: `{feature key: L}`, the id slots per example of a sparse input.
    tables: `{column: lookup table}`, kept by the transform across batches; a
      table is created outside any graph (`tf.init_scope`) so `dataset.map`
      captures one table instead of building one per trace.
  """

  def __init__(self, features: Mapping[str, Any], sparse_lengths: Mapping[str, int],
               tables: dict):
    self._features = features
    self._lengths = sparse_lengths
    self._tables = tables
    self._memo: dict = {}

  def raw(self, key: str, column: str):
    """The raw feature `[batch, ...]` (rank 1 becomes `[batch, 1]`, as tf does)."""
    if key not in self._features:
      raise ValueError(f'feature column {column!r}: feature {key!r} is not in the input '
                       f'features {sorted(self._features)}.')
    x = self._features[key]
    if isinstance(x, tf.RaggedTensor):
      x = x.to_sparse()
    elif not isinstance(x, tf.SparseTensor):
      x = tf.convert_to_tensor(x)
    rank = x.shape.rank
    if rank == 0:
      raise ValueError(f'feature column {column!r}: feature {key!r} is a scalar; it needs a '
                       'leading batch dimension (batch the dataset).')
    if rank == 1:
      if isinstance(x, tf.SparseTensor):
        return tf.SparseTensor(tf.concat([x.indices, tf.zeros_like(x.indices)], axis=1),
                               x.values, tf.stack([x.dense_shape[0], 1]))
      return x[:, None]
    return x

  def flat(self, key: str, column: str):
    """The raw feature as `[batch, n]`: what categorical columns and crosses read."""
    x = self.raw(key, column)
    if x.shape.rank == 2:
      return x
    if isinstance(x, tf.SparseTensor):
      return tf.sparse.reshape(x, tf.stack([x.dense_shape[0], -1]))
    return tf.reshape(x, [-1, math.prod(x.shape[1:])])

  def width(self, key: str, column: str) -> int:
    """The static number of values per example of feature `key`."""
    x = self.raw(key, column)
    if isinstance(x, tf.SparseTensor):
      if key in self._lengths:
        return self._lengths[key]
      inner = x.shape[1:]
      if inner.is_fully_defined():
        return math.prod(inner)
      raise ValueError(
          f'feature column {column!r}: feature {key!r} is a variable-length (sparse) input '
          'whose length per example is not known here; give it, e.g. '
          f'FeatureTransform(columns, sparse_lengths={{{key!r}: 8}}): examples are padded to '
          'that many values (and an example with more is an error).')
    if not x.shape[1:].is_fully_defined():
      raise ValueError(f'feature column {column!r}: feature {key!r} has shape {x.shape}; '
                       'every dimension but the batch must be known.')
    return math.prod(x.shape[1:])

  def table(self, column):
    """The lookup table of a vocabulary column, created once (see `tables`)."""
    if column not in self._tables:
      with tf.init_scope():
        self._tables[column] = column.make_table()
    return self._tables[column]

  def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
    """`compute()` once per batch for `key` (a column reached twice is built once)."""
    if key not in self._memo:
      self._memo[key] = compute()
    return self._memo[key]

  def sparse_ids(self, column):
    return self.memo(('ids', column), lambda: column.sparse_ids(self))

  def numeric(self, column):
    return self.memo(('value', column), lambda: column.value(self))


def to_sparse(x) -> tf.SparseTensor:
  """tf's `_to_sparse_input_and_drop_ignore_values` for a `[batch, n]` input.

  A dense input loses its missing values ('' for strings, -1 for integers);
  the kept values keep their positions as indices. A SparseTensor is returned
  unchanged, so a sparse '' or -1 is a value like any other (as in tf).
  """
  if isinstance(x, tf.SparseTensor):
    return x
  if x.dtype == tf.string:
    missing = tf.constant('', tf.string)
  elif x.dtype.is_integer:
    missing = tf.constant(-1, x.dtype)
  else:
    missing = tf.zeros([], x.dtype)
  indices = tf.where(tf.not_equal(x, missing))
  return tf.SparseTensor(indices, tf.gather_nd(x, indices), tf.shape(x, out_type=tf.int64))


def all_positions(x: tf.Tensor) -> tf.SparseTensor:
  """Every value of a dense `[batch, n]` tensor as a SparseTensor (nothing is missing)."""
  indices = tf.where(tf.ones_like(x, dtype=tf.bool))
  return tf.SparseTensor(indices, tf.reshape(x, [-1]), tf.shape(x, out_type=tf.int64))


def _row_major_keys(st: tf.SparseTensor) -> tf.Tensor:
  """int64 `[nnz]`: each index `[i, j]` of `[batch, n]` `st` as one number, in row-major order."""
  cols = st.indices[:, 1]
  return st.indices[:, 0] * (tf.maximum(tf.reduce_max(cols), 0) + 1) + cols


def own_slots(st: tf.SparseTensor) -> tf.SparseTensor:
  """`[batch, n]` `st` in row-major order, with every value in a slot of its own.

  tf's id lists ignore the column index: `safe_embedding_lookup_sparse`
  (embedding columns, linear models) reads each value of a row, so a
  SparseTensor with a repeated index `[i, j]` gives row i two ids (tf's
  indicator column fails in `SparseToDense` instead; its weighted branch sums
  them). So: a row with a repeated index has its values in slots 0, 1, ... in
  the order given; every other row keeps its positions (a dense input's
  positions, which weighted columns pair their weights by).
  """
  rows, cols = st.indices[:, 0], st.indices[:, 1]
  keys = _row_major_keys(st)
  ordered = tf.reduce_all(keys[1:] > keys[:-1])  # the usual case (dense, parse_example)

  def reslot():
    n = tf.shape(keys, out_type=tf.int64)[0]
    order = tf.argsort(keys, stable=True)  # row-major; ties keep their order
    sorted_keys, sorted_rows = tf.gather(keys, order), tf.gather(rows, order)
    repeated = tf.concat([[False], tf.equal(sorted_keys[1:], sorted_keys[:-1])], axis=0)
    n_rows = st.dense_shape[0]
    row_repeats = tf.math.unsorted_segment_max(tf.cast(repeated, tf.int32), sorted_rows,
                                               n_rows) > 0
    rank = tf.range(n) - tf.gather(tf.math.unsorted_segment_min(tf.range(n), sorted_rows,
                                                                n_rows), sorted_rows)
    slots = tf.where(tf.gather(row_repeats, sorted_rows), rank, tf.gather(cols, order))
    return tf.stack([sorted_rows, slots], axis=1), tf.gather(st.values, order)

  indices, values = tf.cond(ordered, lambda: (st.indices, st.values), reslot)
  return tf.SparseTensor(indices, values, st.dense_shape)


def has_repeated_index(st: tf.SparseTensor) -> tf.Tensor:
  """Scalar bool: does some index of `[batch, n]` `st` occur twice?"""
  keys = _row_major_keys(st)
  return tf.size(tf.unique(keys).y) < tf.size(keys)


def paired_weights(ids: tf.SparseTensor, weights: tf.SparseTensor,
                   column: str) -> tf.SparseTensor:
  """`weights`, checked to pair with `ids` when either repeats an index.

  tf pairs a weighted column's ids and weights value by value; `own_slots`
  keeps that pairing only when both have the same indices, so with a
  repeated index anything else is an error naming the column.
  """
  same = tf.cond(tf.equal(tf.shape(ids.indices)[0], tf.shape(weights.indices)[0]),
                 lambda: tf.reduce_all(tf.equal(ids.indices, weights.indices)),
                 lambda: tf.constant(False))
  ok = same | ~(has_repeated_index(ids) | has_repeated_index(weights))
  check = tf.debugging.Assert(ok, [
      f'feature column {column!r}: its ids or weights repeat a sparse index, so the weights '
      'must be a SparseTensor with exactly the ids\' indices (paired value by value)'])
  with tf.control_dependencies([check]):
    return tf.SparseTensor(tf.identity(weights.indices), weights.values, weights.dense_shape)


def _densify(st: tf.SparseTensor, width: int, default, column: str) -> tf.Tensor:
  """`[batch, width]` with each value at its slot (`own_slots`) and `default` elsewhere."""
  st = own_slots(st)
  fits = tf.debugging.assert_less(
      st.indices[:, 1], tf.constant(width, tf.int64),
      message=(f'feature column {column!r}: an example has more values than the {width} '
               'slots it was given (for a sparse input, raise its sparse_lengths entry)'))
  with tf.control_dependencies([fits]):
    shape = tf.stack([st.dense_shape[0], tf.constant(width, tf.int64)])
    dense = tf.sparse.to_dense(tf.SparseTensor(st.indices, st.values, shape),
                               default_value=default)
  return tf.ensure_shape(dense, [None, width])


def densify_ids(ids: tf.SparseTensor, width: int, column: str) -> tf.Tensor:
  """int32 `[batch, width]` ids, -1 where there is none (int64 ids saturate)."""
  values = tf.cast(tf.clip_by_value(ids.values, _INT32.min, _INT32.max), tf.int32)
  return _densify(tf.SparseTensor(ids.indices, values, ids.dense_shape), width, -1, column)


def densify_weights(weights: tf.SparseTensor, width: int, column: str) -> tf.Tensor:
  """float32 `[batch, width]` weights, 0 where there is no id."""
  values = tf.cast(weights.values, tf.float32)
  return _densify(tf.SparseTensor(weights.indices, values, weights.dense_shape), width, 0.0,
                  column)
