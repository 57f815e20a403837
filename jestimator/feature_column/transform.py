"""The host half as a `HostTransform`: raw features -> the arrays the device half reads.

  columns = [fc.embedding_column(fc.categorical_column_with_vocabulary_list(
                 'island', ['Biscoe', 'Dream', 'Torgersen']), 2),
             fc.numeric_column('bill_length_mm')]
  est = je.Estimator(model_fn, input_transforms=[fc.FeatureTransform(columns)])

Inside the tf.data pipeline of every input_fn the transform replaces the raw
features by each column's outputs (keys in `base`): '<name>/value',
'<name>/ids', '<name>/weights'. Dense numeric raw features also pass through
unchanged (a weight column, features a model_fn reads directly); string and
sparse raw features stop here, as JAX cannot take them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from jestimator.feature_column import base, host
from jestimator.inputs.host_transform import HostTransform
from jestimator.spec import ModeKeys
from jestimator.tf_import import tf


def check_columns(feature_columns: Any, where: str) -> list[base.FeatureColumn]:
  """The columns as a list; raises on a non-column or two columns with one name."""
  if isinstance(feature_columns, base.FeatureColumn):
    feature_columns = [feature_columns]
  columns = list(feature_columns)
  by_name: dict[str, base.FeatureColumn] = {}
  for column in columns:
    if not isinstance(column, base.FeatureColumn):
      raise ValueError(f'{where}: items of feature_columns must be feature columns '
                       f'(jestimator.feature_column), got {column!r}.')
    if column.name in by_name:
      raise ValueError(f'{where}: duplicate feature column name {column.name!r}: '
                       f'{by_name[column.name]!r} and {column!r}.')
    by_name[column.name] = column
  return columns


def host_columns(columns: Sequence[base.FeatureColumn]) -> list[base.FeatureColumn]:
  """The distinct columns whose host outputs `columns` read, in first-use order."""
  out: dict[str, base.FeatureColumn] = {}
  for column in columns:
    for part in column.host_columns():
      if part.name in out and out[part.name] != part:
        raise ValueError(f'two different columns named {part.name!r} would write the same '
                         f'features: {out[part.name]!r} and {part!r}.')
      out[part.name] = part
  return list(out.values())


class FeatureTransform(HostTransform):
  """Feature columns' host half (see the module docstring).

  Args:
    feature_columns: the columns (each column's outputs are written once,
      even if several columns read them).
    sparse_lengths: `{feature key: L}` for sparse (variable-length) inputs:
      examples are padded to `L` values, so every batch has one shape; an
      example with more values is an error naming the column. Not needed when
      a SparseTensor's dense shape is static (e.g. eager constants).
  """

  def __init__(self, feature_columns: Sequence[base.FeatureColumn],
               sparse_lengths: Mapping[str, int] | None = None):
    self.feature_columns = check_columns(feature_columns, 'FeatureTransform')
    self._host_columns = host_columns(self.feature_columns)
    self._sparse_lengths = dict(sparse_lengths or {})
    for key, length in self._sparse_lengths.items():
      base.check_positive_int(length, f'sparse_lengths[{key!r}]', 'FeatureTransform')
    self._tables: dict = {}

  def __repr__(self) -> str:
    return f'FeatureTransform({[c.name for c in self.feature_columns]})'

  def transform(self, features: Any, labels: Any, mode: str) -> tuple[Any, Any]:
    if not isinstance(features, Mapping):
      raise ValueError(f'feature columns need features as a dict, got {type(features).__name__}.')
    as_numpy = tf.executing_eagerly() and not any(
        isinstance(v, (tf.Tensor, tf.SparseTensor, tf.RaggedTensor)) for v in features.values())
    cache = host.HostCache(features, self._sparse_lengths, self._tables)
    out = {k: v for k, v in features.items() if _is_dense_number(v)}
    for column in self._host_columns:
      for key, value in column.host_outputs(cache).items():
        if key in features:
          raise ValueError(f'feature column {column.name!r} writes {key!r}, which is already '
                           'a raw feature: rename that feature.')
        out[key] = value
    if as_numpy:
      out = {k: v.numpy() if isinstance(v, tf.Tensor) else v for k, v in out.items()}
    return out, labels


def _is_dense_number(x: Any) -> bool:
  if isinstance(x, (tf.SparseTensor, tf.RaggedTensor)):
    return False
  if isinstance(x, tf.Tensor):
    return x.dtype.is_floating or x.dtype.is_integer or x.dtype.is_bool
  return np.asarray(x).dtype.kind in 'biuf'


def transform_features(features: Mapping[str, Any], feature_columns: Sequence[base.FeatureColumn],
                       sparse_lengths: Mapping[str, int] | None = None) -> dict[str, Any]:
  """The host half on one batch: what the model_fn would receive as features.

  Runs eagerly or inside a tf.function; tensors in, tensors out (numpy in,
  numpy out).
  """
  transform = FeatureTransform(feature_columns, sparse_lengths)
  return transform.transform(features, None, ModeKeys.PREDICT)[0]
