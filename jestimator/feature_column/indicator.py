"""`indicator_column`: a categorical column as a multi-hot (count) vector.

Host: its categorical column's ids (and weights). Device: `[batch,
num_buckets]` float32 where each id adds 1 (or its weight): a repeated id
gives 2.0, an example with no ids (or only -1) is all zeros, as in tf.
"""

from __future__ import annotations

import dataclasses

import jax

from jestimator.feature_column import base, lookup


@dataclasses.dataclass(frozen=True)
class IndicatorColumn(base.DenseColumn):
  """See `indicator_column`."""

  categorical_column: base.CategoricalColumn

  @property
  def name(self) -> str:
    return f'{self.categorical_column.name}_indicator'

  @property
  def parents(self) -> tuple:
    return (self.categorical_column,)

  def host_columns(self) -> tuple:
    return (self.categorical_column,)

  @property
  def parse_example_spec(self) -> dict:
    return self.categorical_column.parse_example_spec

  @property
  def dense_width(self) -> int:
    return self.categorical_column.num_buckets

  def dense_tensor(self, features, table=None) -> jax.Array:
    ids, weights = self.categorical_column.ids_and_weights(features)
    return lookup.multi_hot(ids, weights, self.dense_width)


def indicator_column(categorical_column: base.CategoricalColumn) -> IndicatorColumn:
  """Multi-hot `[batch, num_buckets]` of a categorical column (tf.feature_column.indicator_column)."""
  if not isinstance(categorical_column, base.CategoricalColumn):
    raise ValueError('indicator_column: categorical_column must be a categorical column, got '
                     f'{categorical_column!r}.')
  return IndicatorColumn(categorical_column)
