"""`weighted_categorical_column`: a categorical column whose ids carry weights.

Host: the ids of the wrapped column, and the weight feature densified to the
same `[batch, L]` slots (a weight sits at its id's position; 0 where there is
no id). tf drops 0.0 from dense weights; densifying by position keeps ids and
weights aligned either way. Where a sparse input repeats an index, tf pairs
ids and weights value by value: that needs weights with the ids' indices (an
error naming the column otherwise; `host.paired_weights`). Device:
`ids_and_weights` returns both; lookups multiply by the weights (and for the
`mean`/`sqrtn` combiners skip weights <= 0, as tf does).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jestimator.feature_column import base, host
from jestimator.tf_import import tf


@dataclasses.dataclass(frozen=True)
class WeightedColumn(base.CategoricalColumn):
  """See `weighted_categorical_column`."""

  categorical_column: base.CategoricalColumn
  weight_feature_key: str
  dtype: tf.DType

  @property
  def name(self) -> str:
    return f'{self.categorical_column.name}_weighted_by_{self.weight_feature_key}'

  @property
  def parents(self) -> tuple:
    return (self.categorical_column,)

  @property
  def num_buckets(self) -> int:
    return self.categorical_column.num_buckets

  @property
  def parse_example_spec(self) -> dict:
    return {**self.categorical_column.parse_example_spec,
            self.weight_feature_key: tf.io.VarLenFeature(self.dtype)}

  def sparse_ids(self, cache: host.HostCache):
    ids, _ = cache.sparse_ids(self.categorical_column)
    w = cache.flat(self.weight_feature_key, self.name)
    if w.dtype != self.dtype:
      raise ValueError(f'weighted_categorical_column {self.name!r}: weight feature '
                       f'{self.weight_feature_key!r} has dtype {w.dtype.name}, expected '
                       f'{self.dtype.name}.')
    return ids, host.paired_weights(ids, host.to_sparse(w), self.name)

  def width(self, cache: host.HostCache) -> int:
    width = self.categorical_column.width(cache)
    w = cache.flat(self.weight_feature_key, self.name)
    if not isinstance(w, tf.SparseTensor) and cache.width(self.weight_feature_key,
                                                          self.name) != width:
      raise ValueError(
          f'weighted_categorical_column {self.name!r}: weight feature '
          f'{self.weight_feature_key!r} has {cache.width(self.weight_feature_key, self.name)} '
          f'values per example but {self.categorical_column.name!r} has {width} id slots.')
    return width

  def check_ids(self, ids) -> None:
    self.categorical_column.check_ids(ids)

  def ids_and_weights(self, features):
    ids, _ = super().ids_and_weights(features)
    weights = jnp.asarray(base.require(features, base.weights_key(self.name), self.name),
                          jnp.float32)
    if weights.shape != ids.shape:
      raise ValueError(f'weighted_categorical_column {self.name!r}: weights shape '
                       f'{weights.shape} differs from ids shape {ids.shape}.')
    return ids, weights


def weighted_categorical_column(categorical_column: base.CategoricalColumn,
                                weight_feature_key: str, dtype='float32') -> WeightedColumn:
  """Per-id weights from feature `weight_feature_key` (same layout as the ids)."""
  if not isinstance(categorical_column, base.CategoricalColumn):
    raise ValueError('weighted_categorical_column: categorical_column must be a categorical '
                     f'column, got {categorical_column!r}.')
  if not isinstance(weight_feature_key, str) or not weight_feature_key:
    raise ValueError(f'weighted_categorical_column {categorical_column.name!r}: '
                     f'weight_feature_key must be a string, got {weight_feature_key!r}.')
  dtype = tf.as_dtype(dtype)
  if not (dtype.is_floating or dtype.is_integer):
    raise ValueError(f'weighted_categorical_column {categorical_column.name!r}: dtype '
                     f'{dtype.name} is not convertible to float.')
  return WeightedColumn(categorical_column, weight_feature_key, dtype)
