"""`DenseFeatures`: dense columns concatenated into one `[batch, width]` input layer.

The device half of tf.keras.layers.DenseFeatures: columns sorted by name (as
tf, whatever order they were given in), each contributing `dense_width`
values per example: numeric values flattened, bucketized one-hot, indicator
counts, embeddings (whose tables are this module's parameters).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jestimator.feature_column import base, embedding
from jestimator.feature_column.transform import check_columns


def sorted_columns(feature_columns: Sequence[base.FeatureColumn], where: str,
                   kinds: tuple[type, ...], hint: str) -> list:
  """Checked columns of `kinds`, sorted by name (tf's concatenation order)."""
  columns = check_columns(feature_columns, where)
  for column in columns:
    if not isinstance(column, kinds):
      raise ValueError(f'{where}: column {column.name!r} ({type(column).__name__}) is not '
                       f'supported: {hint}')
  return sorted(columns, key=lambda c: c.name)


def layout(feature_columns: Sequence[base.DenseColumn]) -> list[tuple[str, int, int]]:
  """`(column name, offset, width)` of each column in the `DenseFeatures` output."""
  out, offset = [], 0
  for column in sorted_columns(feature_columns, 'DenseFeatures', (base.DenseColumn,), ''):
    out.append((column.name, offset, column.dense_width))
    offset += column.dense_width
  return out


class DenseFeatures(nn.Module):
  """float32 `[batch, sum of dense widths]` from the host half's features.

  Use inside a model_fn whose Estimator applies `FeatureTransform(columns)`:

    net = DenseFeatures(columns)(features)

  Attributes:
    feature_columns: dense columns (numeric, bucketized, indicator, embedding,
      shared embedding); wrap categorical columns in an indicator or embedding.
  """

  feature_columns: Sequence[base.DenseColumn]

  @nn.compact
  def __call__(self, features: Mapping[str, Any]) -> jax.Array:
    columns = sorted_columns(self.feature_columns, 'DenseFeatures', (base.DenseColumn,),
                             'wrap a categorical column in embedding_column or indicator_column.')
    if not columns:
      raise ValueError('DenseFeatures: feature_columns must not be empty.')
    tables = embedding.make_tables(columns)
    pieces = []
    for column in columns:
      spec = column.table_spec
      piece = column.dense_tensor(features, tables[spec.name] if spec else None)
      pieces.append(piece.astype(jnp.float32))
    return jnp.concatenate(pieces, axis=-1)
