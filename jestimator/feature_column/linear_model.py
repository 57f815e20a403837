"""`LinearModel`: the linear logits of tf.estimator's linear models.

The device half of the `LinearModel` layer inside tf.estimator's
LinearClassifier/Regressor: columns sorted by name; a categorical column
(bucketized included) owns weights `[num_buckets, units]` combined over its
ids with `sparse_combiner` (`lookup.combine`, tf's weighted sum); a dense
column owns weights `[dense_width, units]` (a matmul); plus `bias_weights`
`[units]`. Every weight starts at zero, as in tf.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jestimator.feature_column import base, lookup
from jestimator.feature_column.dense_features import sorted_columns

BIAS = 'bias_weights'


class LinearModel(nn.Module):
  """float32 logits `[batch, units]` from the host half's features.

  Parameters are named by column (`<column name>`, and `bias_weights`), so
  `est.get_variable_value('params/linear/island')` reads one column's weights.

  Attributes:
    feature_columns: categorical and dense columns (not embeddings: a linear
      model learns one weight per id of the categorical column itself).
    units: logits per example.
    sparse_combiner: 'sum' (default), 'mean' or 'sqrtn': how several ids of
      one example (a multivalent input) combine.
  """

  feature_columns: Sequence[base.FeatureColumn]
  units: int = 1
  sparse_combiner: str = 'sum'

  @nn.compact
  def __call__(self, features: Mapping[str, Any]) -> jax.Array:
    if self.sparse_combiner not in lookup.COMBINERS:
      raise ValueError(f'LinearModel: sparse_combiner must be one of {lookup.COMBINERS}, got '
                       f'{self.sparse_combiner!r}.')
    columns = sorted_columns(self.feature_columns, 'LinearModel',
                             (base.CategoricalColumn, base.DenseColumn), '')
    if not columns:
      raise ValueError('LinearModel: feature_columns must not be empty.')
    for column in columns:
      if isinstance(column, base.DenseColumn) and column.table_spec is not None:
        raise ValueError(f'LinearModel: embedding column {column.name!r} is not supported; give '
                         'the linear model its categorical column instead.')
    zeros = nn.initializers.zeros
    total = 0.0
    for column in columns:
      if isinstance(column, base.CategoricalColumn):
        weights = self.param(column.name, zeros, (column.num_buckets, self.units), jnp.float32)
        ids, id_weights = column.ids_and_weights(features)
        total = total + lookup.combine(weights, ids, id_weights, self.sparse_combiner)
      else:
        weights = self.param(column.name, zeros, (column.dense_width, self.units), jnp.float32)
        x = column.dense_tensor(features)
        total = total + x.astype(jnp.float32) @ weights
    return total + self.param(BIAS, zeros, (self.units,), jnp.float32)
