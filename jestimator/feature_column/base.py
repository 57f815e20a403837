"""What every feature column is, and the names of the arrays its two halves share.

A column has a **host half** (TF ops run inside the tf.data pipeline, see
`transform.py`) that turns raw features -- strings, ids, numbers, dense or
`tf.SparseTensor` -- into dense numeric arrays with a leading batch dimension,
and a **device half** (jnp, inside a Flax module) that reads those arrays.
The arrays travel in the features dict under these keys:

  '<column name>/value'    float32 [batch, *shape]  numeric_column (normalized)
  '<column name>/ids'      int32   [batch, L]       every categorical column
  '<column name>/weights'  float32 [batch, L]       weighted_categorical_column

`L` is static: the width of a dense input, `sparse_lengths[key]` (or the
static `dense_shape`) of a `SparseTensor` input, the product of the widths of
a cross. An id of -1 means "no id" (padding, a dense '' or -1, an OOV value
without OOV buckets); every device consumer skips ids outside
`[0, num_buckets)`, as tf's `safe_embedding_lookup_sparse` and one-hot do.
Indicator and embedding columns read their categorical column's arrays.

Columns are frozen dataclasses: two columns built with the same arguments are
equal, so shared sub-columns are computed once per batch.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import jax.numpy as jnp

from jestimator.feature_column import host


def value_key(name: str) -> str:
  return f'{name}/value'


def ids_key(name: str) -> str:
  return f'{name}/ids'


def weights_key(name: str) -> str:
  return f'{name}/weights'


def require(features: Mapping[str, Any], key: str, column: str):
  """`features[key]`, or an error that says the host half did not run."""
  if not isinstance(features, Mapping):
    raise TypeError(f'feature column {column!r}: features must be a dict, got '
                    f'{type(features).__name__}.')
  if key not in features:
    raise ValueError(
        f'feature column {column!r}: {key!r} is not in the features ({sorted(features)}). '
        'The device half reads what the host half wrote: pass '
        'input_transforms=[FeatureTransform(columns)] to the Estimator (or call '
        'transform_features) with this column among the columns.')
  return features[key]


class FeatureColumn:
  """Base of all columns (see the module docstring)."""

  @property
  def name(self) -> str:
    """tf.feature_column's name: sorts DenseFeatures/LinearModel, keys the outputs."""
    raise NotImplementedError

  @property
  def parents(self) -> tuple['FeatureColumn', ...]:
    """The columns this one is built on (for traversal)."""
    return ()

  @property
  def parse_example_spec(self) -> dict:
    """{feature key: tf.io.FixedLenFeature | tf.io.VarLenFeature} this column reads."""
    raise NotImplementedError

  def host_columns(self) -> tuple['FeatureColumn', ...]:
    """The columns whose host outputs this column's device half reads."""
    return (self,)

  def host_outputs(self, cache) -> dict:
    """Host half (TF ops): `{key: tf.Tensor [batch, ...]}` for one batch."""
    raise NotImplementedError


class DenseColumn(FeatureColumn):
  """A column with a dense float32 `[batch, dense_width]` value on device."""

  @property
  def dense_width(self) -> int:
    raise NotImplementedError

  @property
  def table_spec(self):
    """The embedding table this column reads (`embedding.TableSpec`), or None."""
    return None

  def dense_tensor(self, features: Mapping[str, Any], table=None):
    """Device half: float32 `[batch, dense_width]` (an embedding reads `table`)."""
    raise NotImplementedError


class CategoricalColumn(FeatureColumn):
  """A column of ids in `[0, num_buckets)`, zero or more per example.

  Subclasses give the host half as `sparse_ids` (tf's `get_sparse_tensors`:
  SparseTensors, so crosses and the fixtures see tf's exact ids) and the static
  padded width `width`; this class densifies them and reads them back on device.
  """

  @property
  def num_buckets(self) -> int:
    raise NotImplementedError

  def sparse_ids(self, cache):
    """Host: `(ids int64 tf.SparseTensor [batch, n], weights tf.SparseTensor | None)`."""
    raise NotImplementedError

  def width(self, cache) -> int:
    """Host: the static number of id slots `L` per example."""
    raise NotImplementedError

  def host_outputs(self, cache) -> dict:
    ids, weights = cache.sparse_ids(self)
    width = self.width(cache)
    out = {ids_key(self.name): host.densify_ids(ids, width, self.name)}
    if weights is not None:
      out[weights_key(self.name)] = host.densify_weights(weights, width, self.name)
    return out

  def ids_and_weights(self, features: Mapping[str, Any]):
    """Device: `(ids int32 [batch, L], weights float32 [batch, L] or None)`."""
    ids = jnp.asarray(require(features, ids_key(self.name), self.name))
    if ids.ndim != 2:
      raise ValueError(f'feature column {self.name!r}: {ids_key(self.name)!r} must be '
                       f'[batch, L], got shape {ids.shape}.')
    ids = ids.astype(jnp.int32)
    self.check_ids(ids)
    return ids, None

  def check_ids(self, ids) -> None:
    """Device: asserts on this column's ids (`jestimator.check`); by default none."""


def check_positive_int(value: Any, what: str, column: str) -> int:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'{column}: {what} must be an int >= 1, got {value!r}.')
  return value


def elements(shape: tuple[int, ...]) -> int:
  return math.prod(shape)
