"""`crossed_column`: hashed conjunctions of string/int features and categorical columns.

Host: tf's `sparse_cross_hashed` on the leaves, as tf.feature_column calls it:
a raw key keeps its kind (a dense '' is crossed like any value, a sparse
input is multivalent), a categorical key contributes its int64 ids, and the
op puts sparse inputs before dense ones. Each example's ids are the cartesian
product of its leaves' values chained through FingerprintCat64 from
`hash_key`, modulo `hash_bucket_size`. Width: the product of the leaves'.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from jestimator.feature_column import base, host
from jestimator.feature_column.categorical import HashedColumn
from jestimator.feature_column.weighted import WeightedColumn
from jestimator.tf_import import tf


@dataclasses.dataclass(frozen=True)
class CrossedColumn(base.CategoricalColumn):
  """See `crossed_column`."""

  keys: tuple
  hash_bucket_size: int
  hash_key: int | None = None

  def leaves(self) -> list:
    """Raw keys and categorical columns, nested crosses flattened (tf's leaf-level keys)."""
    out = []
    for key in self.keys:
      out.extend(key.leaves() if isinstance(key, CrossedColumn) else [key])
    return out

  @property
  def name(self) -> str:
    return '_X_'.join(sorted(k if isinstance(k, str) else k.name for k in self.leaves()))

  @property
  def parents(self) -> tuple:
    return tuple(k for k in self.keys if not isinstance(k, str))

  @property
  def num_buckets(self) -> int:
    return self.hash_bucket_size

  @property
  def parse_example_spec(self) -> dict:
    spec = {}
    for key in self.keys:
      spec.update({key: tf.io.VarLenFeature(tf.string)} if isinstance(key, str) else
                  key.parse_example_spec)
    return spec

  def _raw(self, key: str, cache: host.HostCache):
    x = cache.flat(key, self.name)
    if x.dtype != tf.string and not x.dtype.is_integer:
      raise ValueError(f'crossed_column {self.name!r}: feature {key!r} holds {x.dtype.name} '
                       'values; crosses take strings or integers (cross a bucketized_column '
                       'of a real-valued feature).')
    if x.dtype.is_integer and x.dtype != tf.int64:
      x = tf.cast(x, tf.int64) if not isinstance(x, tf.SparseTensor) else tf.SparseTensor(
          x.indices, tf.cast(x.values, tf.int64), x.dense_shape)
    return x

  def sparse_ids(self, cache: host.HostCache):
    inputs = []
    for leaf in self.leaves():
      if isinstance(leaf, str):
        inputs.append(self._raw(leaf, cache))
      else:
        inputs.append(cache.sparse_ids(leaf)[0])
    return tf.sparse.cross_hashed(inputs, num_buckets=self.hash_bucket_size,
                                  hash_key=self.hash_key), None

  def width(self, cache: host.HostCache) -> int:
    return math.prod(cache.width(leaf, self.name) if isinstance(leaf, str) else leaf.width(cache)
                     for leaf in self.leaves())


def crossed_column(keys: Sequence, hash_bucket_size: int,
                   hash_key: int | None = None) -> CrossedColumn:
  """Crosses of features (tf.feature_column.crossed_column).

  Args:
    keys: at least two raw feature names (string or int features) or
      categorical columns (not hash-bucket or weighted ones).
    hash_bucket_size: the number of buckets, >= 1.
    hash_key: the FingerprintCat64 seed (default tf's 0xDECAFCAFFE).
  """
  if isinstance(keys, (str, bytes)) or len(keys) < 2:
    raise ValueError(f'crossed_column: keys must be a list with length > 1, got {keys!r}.')
  names = [k if isinstance(k, str) else getattr(k, 'name', repr(k)) for k in keys]
  if isinstance(hash_bucket_size, bool) or not isinstance(hash_bucket_size, int) or (
      hash_bucket_size < 1):
    raise ValueError(f'crossed_column {names}: hash_bucket_size must be at least 1, got '
                     f'{hash_bucket_size!r}.')
  for key in keys:
    if not isinstance(key, (str, base.CategoricalColumn)):
      raise ValueError(f'crossed_column {names}: keys must be feature names or categorical '
                       f'columns, got {key!r}.')
    if isinstance(key, HashedColumn):
      raise ValueError(
          f'crossed_column {names}: categorical_column_with_hash_bucket {key.name!r} is not '
          'supported for crossing (hashing before crossing adds collisions); use the feature '
          f'name {key.key!r} as a key instead.')
    if isinstance(key, WeightedColumn):
      raise ValueError(f'crossed_column {names}: weighted column {key.name!r} cannot be '
                       'crossed (crosses have no weights).')
  return CrossedColumn(tuple(keys), hash_bucket_size, hash_key)
