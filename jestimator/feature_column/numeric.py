"""`numeric_column` and `bucketized_column`.

Host: a numeric column applies `normalizer_fn` to the raw tensor (before the
float32 cast, so an int input gets int arithmetic, as in tf) and writes
float32 `[batch, *shape]`. A bucketized column writes one id per element,
`bucket + (len(boundaries) + 1) * position` (tf's ids; a value equal to a
boundary falls in the upper bucket). Device: the numeric value flattened, or
the bucket ids one-hot (`[batch, n * (len(boundaries) + 1)]`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jestimator.feature_column import base, host
from jestimator.tf_import import tf


@dataclasses.dataclass(frozen=True)
class NumericColumn(base.DenseColumn):
  """Real values `[batch, *shape]`; see `numeric_column`."""

  key: str
  shape: tuple[int, ...]
  default_value: Any
  dtype: tf.DType
  normalizer_fn: Callable | None

  @property
  def name(self) -> str:
    return self.key

  @property
  def dense_width(self) -> int:
    return base.elements(self.shape)

  @property
  def parse_example_spec(self) -> dict:
    return {self.key: tf.io.FixedLenFeature(self.shape, self.dtype, self.default_value)}

  def value(self, cache: host.HostCache) -> tf.Tensor:
    """Host: float32 `[batch, *shape]`."""
    x = cache.raw(self.key, self.name)
    if isinstance(x, tf.SparseTensor):
      raise ValueError(f'numeric_column {self.name!r}: feature {self.key!r} is a SparseTensor; '
                       'a numeric column needs a dense Tensor.')
    if x.dtype == tf.string or not (x.dtype.is_floating or x.dtype.is_integer):
      raise ValueError(f'numeric_column {self.name!r}: feature {self.key!r} holds {x.dtype.name} '
                       'values, not numbers. Use a categorical column for strings.')
    inner = x.shape[1:]
    if inner.is_fully_defined() and base.elements(tuple(inner)) != self.dense_width:
      raise ValueError(f'numeric_column {self.name!r}: expected {self.dense_width} value(s) '
                       f'per example (shape {self.shape}), got feature {self.key!r} of shape '
                       f'{x.shape}.')
    if self.normalizer_fn is not None:
      x = self.normalizer_fn(x)
    return tf.reshape(tf.cast(x, tf.float32), (-1,) + self.shape)

  def host_outputs(self, cache: host.HostCache) -> dict:
    return {base.value_key(self.name): cache.numeric(self)}

  def dense_tensor(self, features, table=None) -> jax.Array:
    x = jnp.asarray(base.require(features, base.value_key(self.name), self.name), jnp.float32)
    return x.reshape(x.shape[0], self.dense_width)


def numeric_column(key: str, shape: int | Sequence[int] = (1,), default_value: Any = None,
                   dtype: tf.DType | str = 'float32',
                   normalizer_fn: Callable | None = None) -> NumericColumn:
  """A real-valued feature (tf.feature_column.numeric_column).

  Args:
    key: the feature name.
    shape: the shape of one example's value (`[batch, *shape]` on device).
    default_value: used when parsing tf.Examples (`make_parse_example_spec`)
      only; a scalar or a value of `shape`.
    dtype: the parsed type (float or int).
    normalizer_fn: a TF function applied to the raw tensor on the host, e.g.
      `lambda x: (x - mean) / std`.
  """
  if not isinstance(key, str):
    raise ValueError(f'numeric_column: key must be a string, got {key!r}.')
  shape = (shape,) if isinstance(shape, int) else tuple(shape)
  for d in shape:
    base.check_positive_int(d, 'every dimension of shape', f'numeric_column {key!r}')
  dtype = tf.as_dtype(dtype)
  if not (dtype.is_floating or dtype.is_integer):
    raise ValueError(f'numeric_column {key!r}: dtype must be convertible to float, got {dtype}.')
  if normalizer_fn is not None and not callable(normalizer_fn):
    raise TypeError(f'numeric_column {key!r}: normalizer_fn must be callable, got '
                    f'{normalizer_fn!r}.')
  if default_value is not None:
    value = np.asarray(default_value, dtype.as_numpy_dtype)
    if value.ndim == 0:
      value = np.full(shape, value)
    if value.shape != shape:
      raise ValueError(f'numeric_column {key!r}: default_value {default_value!r} does not fit '
                       f'shape {shape}.')
    default_value = tuple(value.reshape(-1).tolist())
  return NumericColumn(key, shape, default_value, dtype, normalizer_fn)


@dataclasses.dataclass(frozen=True)
class BucketizedColumn(base.DenseColumn, base.CategoricalColumn):
  """Bucket ids of a numeric column; see `bucketized_column`."""

  source_column: NumericColumn
  boundaries: tuple[float, ...]

  @property
  def name(self) -> str:
    return f'{self.source_column.name}_bucketized'

  @property
  def parents(self) -> tuple:
    return (self.source_column,)

  @property
  def parse_example_spec(self) -> dict:
    return self.source_column.parse_example_spec

  @property
  def num_buckets(self) -> int:
    return (len(self.boundaries) + 1) * self.source_column.dense_width

  @property
  def dense_width(self) -> int:
    return self.num_buckets

  def sparse_ids(self, cache: host.HostCache):
    n = self.source_column.dense_width
    x = tf.reshape(cache.numeric(self.source_column), [-1, n])
    buckets = tf.raw_ops.Bucketize(input=x, boundaries=list(self.boundaries))
    offsets = (len(self.boundaries) + 1) * tf.range(n, dtype=tf.int64)
    return host.all_positions(tf.cast(buckets, tf.int64) + offsets), None

  def width(self, cache: host.HostCache) -> int:
    return self.source_column.dense_width

  def dense_tensor(self, features, table=None) -> jax.Array:
    ids, _ = self.ids_and_weights(features)
    depth = len(self.boundaries) + 1
    # Element i's ids are offset by i * depth: one-hot the bucket within the element.
    buckets = ids - depth * jnp.arange(ids.shape[1])
    return jax.nn.one_hot(buckets, depth, dtype=jnp.float32).reshape(ids.shape[0], -1)


def bucketized_column(source_column: NumericColumn,
                      boundaries: Sequence[float]) -> BucketizedColumn:
  """Buckets of a numeric column (tf.feature_column.bucketized_column).

  Bucket i holds `boundaries[i-1] <= x < boundaries[i]`; a source of shape
  `(n,)` has `n * (len(boundaries) + 1)` buckets. Usable as a dense column
  (one-hot), as a categorical column (ids: linear models, embeddings) and in
  crosses.
  """
  if not isinstance(source_column, NumericColumn):
    raise ValueError('bucketized_column: source_column must be a numeric_column, got '
                     f'{source_column!r}.')
  if len(source_column.shape) > 1:
    raise ValueError(f'bucketized_column {source_column.name!r}: source_column must be '
                     f'one-dimensional, got shape {source_column.shape}.')
  boundaries = tuple(float(b) for b in boundaries)
  if not boundaries or list(boundaries) != sorted(set(boundaries)):
    raise ValueError(f'bucketized_column {source_column.name!r}: boundaries must be a '
                     f'non-empty sorted list without duplicates, got {list(boundaries)}.')
  return BucketizedColumn(source_column, boundaries)
