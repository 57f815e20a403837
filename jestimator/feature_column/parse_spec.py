"""`make_parse_example_spec`: the tf.Example parsing spec of a set of columns."""

from __future__ import annotations

from typing import Sequence

from jestimator.feature_column import base


def make_parse_example_spec(feature_columns: Sequence[base.FeatureColumn]) -> dict:
  """`{feature key: tf.io.FixedLenFeature | tf.io.VarLenFeature}` for `tf.io.parse_example`.

  Numeric columns parse fixed-length values (with their default_value);
  categorical inputs and raw crossed keys parse variable-length ones (which
  arrive as SparseTensors: give `FeatureTransform` their `sparse_lengths`).
  """
  spec: dict = {}
  for column in feature_columns:
    if not isinstance(column, base.FeatureColumn):
      raise ValueError(f'make_parse_example_spec: all feature_columns must be feature columns, '
                       f'got {column!r}.')
    for key, value in column.parse_example_spec.items():
      if key in spec and spec[key] != value:
        raise ValueError(f'make_parse_example_spec: feature {key!r} is parsed two ways: '
                         f'{spec[key]} and {value} (column {column.name!r}).')
      spec[key] = value
  return spec
