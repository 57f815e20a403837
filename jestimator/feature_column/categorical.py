"""Categorical columns over one raw feature: identity, vocabulary (list or file), hash bucket.

The host half is tf's own code path, op for op, so the ids are tf's: a dense
input first loses its missing values ('' or -1, `host.to_sparse`); vocabulary
lookups use a tf lookup table, out-of-vocabulary values go to
`vocabulary_size + Fingerprint64(value) % num_oov_buckets` (ints hashed as
their decimal string) or to `default_value`; hash buckets are
`Fingerprint64(value) % hash_bucket_size` (`tf.strings.to_hash_bucket_fast`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jestimator.feature_column import base, host
from jestimator.tf_import import tf
from jestimator.training import checks


def _check_key(key, fn: str) -> str:
  if not isinstance(key, str) or not key:
    raise ValueError(f'{fn}: key must be a non-empty string, got {key!r}.')
  return key


def _check_dtype(column, x, want_string: bool) -> None:
  """tf's 'Column dtype and SparseTensors dtype must be compatible' check."""
  got_string = x.dtype == tf.string
  if got_string != want_string or not (got_string or x.dtype.is_integer):
    raise ValueError(
        f'feature column {column.name!r}: feature {column.key!r} holds {x.dtype.name} values '
        f'but the column takes {"strings" if want_string else "integers"}.')


@dataclasses.dataclass(frozen=True)
class IdentityColumn(base.CategoricalColumn):
  """Integer inputs used as ids; see `categorical_column_with_identity`."""

  key: str
  number_buckets: int
  default_value: int | None = None

  @property
  def name(self) -> str:
    return self.key

  @property
  def num_buckets(self) -> int:
    return self.number_buckets

  @property
  def parse_example_spec(self) -> dict:
    return {self.key: tf.io.VarLenFeature(tf.int64)}

  def sparse_ids(self, cache: host.HostCache):
    x = host.to_sparse(cache.flat(self.key, self.name))
    _check_dtype(self, x, want_string=False)
    values = tf.cast(x.values, tf.int64)
    if self.default_value is not None:
      bad = (values < 0) | (values >= self.number_buckets)
      values = tf.where(bad, tf.constant(self.default_value, tf.int64), values)
    return tf.SparseTensor(x.indices, values, x.dense_shape), None

  def width(self, cache: host.HostCache) -> int:
    return cache.width(self.key, self.name)

  def check_ids(self, ids) -> None:
    """Device: without a default_value every id is in `[0, num_buckets)` (-1: no id)."""
    if self.default_value is None:
      checks.check((ids == -1) | ((ids >= 0) & (ids < self.number_buckets)),
                   'feature column {column!r} (categorical_column_with_identity without '
                   'default_value): id {id} is not in [0, {num_buckets}).',
                   column=self.name, id=ids, num_buckets=self.number_buckets)


def categorical_column_with_identity(key: str, num_buckets: int,
                                     default_value: int | None = None) -> IdentityColumn:
  """Integer ids in `[0, num_buckets)` (tf.feature_column.categorical_column_with_identity).

  Dense -1 is missing. With `default_value` out-of-range values become it;
  without, the device half checks them (`jestimator.check`): training raises
  `InvalidInputError` naming the column, the id and the global step at the
  next log/save sync, evaluate and predict at their end.
  """
  _check_key(key, 'categorical_column_with_identity')
  base.check_positive_int(num_buckets, 'num_buckets', f'categorical_column_with_identity {key!r}')
  if default_value is not None and not 0 <= default_value < num_buckets:
    raise ValueError(f'categorical_column_with_identity {key!r}: default_value {default_value} '
                     f'not in range [0, {num_buckets}).')
  return IdentityColumn(key, num_buckets, default_value)


class _VocabularyColumn(base.CategoricalColumn):
  """What list and file vocabularies share: the lookup and the OOV buckets."""

  @property
  def name(self) -> str:
    return self.key

  @property
  def num_buckets(self) -> int:
    return self.vocabulary_size + self.num_oov_buckets

  @property
  def parse_example_spec(self) -> dict:
    return {self.key: tf.io.VarLenFeature(self.dtype)}

  def _initializer(self) -> tf.lookup.KeyValueTensorInitializer:
    raise NotImplementedError

  def make_table(self) -> tf.lookup.StaticHashTable:
    default = -1 if self.num_oov_buckets else self.default_value
    return tf.lookup.StaticHashTable(self._initializer(), default_value=tf.constant(
        default, tf.int64))

  def sparse_ids(self, cache: host.HostCache):
    x = host.to_sparse(cache.flat(self.key, self.name))
    _check_dtype(self, x, want_string=self.dtype == tf.string)
    values = x.values if x.dtype == tf.string else tf.cast(x.values, tf.int64)
    ids = cache.table(self).lookup(values)
    if self.num_oov_buckets:
      text = values if x.dtype == tf.string else tf.strings.as_string(values)
      oov = tf.strings.to_hash_bucket_fast(text, self.num_oov_buckets) + self.vocabulary_size
      ids = tf.where(tf.not_equal(ids, -1), ids, oov)
    return tf.SparseTensor(x.indices, ids, x.dense_shape), None

  def width(self, cache: host.HostCache) -> int:
    return cache.width(self.key, self.name)


def _check_oov(fn: str, key: str, num_oov_buckets: int, default_value: int | None) -> None:
  if isinstance(num_oov_buckets, bool) or not isinstance(num_oov_buckets, int) or (
      num_oov_buckets < 0):
    raise ValueError(f'{fn} {key!r}: num_oov_buckets must be an int >= 0, got '
                     f'{num_oov_buckets!r}.')
  if num_oov_buckets and default_value not in (None, -1):
    raise ValueError(f"{fn} {key!r}: can't specify both default_value ({default_value}) and "
                     f'num_oov_buckets ({num_oov_buckets}).')


def _key_dtype(dtype, fn: str, key: str) -> tf.DType:
  dtype = tf.as_dtype(dtype)
  if dtype != tf.string and not dtype.is_integer:
    raise ValueError(f'{fn} {key!r}: the vocabulary dtype must be string or integer, got '
                     f'{dtype.name}.')
  return dtype


@dataclasses.dataclass(frozen=True)
class VocabularyListColumn(_VocabularyColumn):
  """Ids by position in an in-memory vocabulary; see `categorical_column_with_vocabulary_list`."""

  key: str
  vocabulary_list: tuple
  dtype: tf.DType
  default_value: int = -1
  num_oov_buckets: int = 0

  @property
  def vocabulary_size(self) -> int:
    return len(self.vocabulary_list)

  def _initializer(self):
    return tf.lookup.KeyValueTensorInitializer(
        tf.constant(self.vocabulary_list, tf.string if self.dtype == tf.string else tf.int64),
        tf.range(self.vocabulary_size, dtype=tf.int64))


def categorical_column_with_vocabulary_list(key: str, vocabulary_list: Sequence,
                                            dtype=None, default_value: int = -1,
                                            num_oov_buckets: int = 0) -> VocabularyListColumn:
  """Strings or ints mapped to their position in `vocabulary_list`.

  Out-of-vocabulary values get `default_value` (-1: no id), or one of
  `num_oov_buckets` hash buckets after the vocabulary. Lookup is case
  sensitive; dense '' / -1 are missing.
  """
  fn = 'categorical_column_with_vocabulary_list'
  _check_key(key, fn)
  if isinstance(vocabulary_list, (str, bytes)) or not len(vocabulary_list):
    raise ValueError(f'{fn} {key!r}: vocabulary_list must be a non-empty list, got '
                     f'{vocabulary_list!r}.')
  vocabulary = tuple(v.decode() if isinstance(v, bytes) else v for v in vocabulary_list)
  if len(set(vocabulary)) != len(vocabulary):
    raise ValueError(f'{fn} {key!r}: duplicate keys in vocabulary_list {list(vocabulary)}.')
  if dtype is None:
    dtype = tf.as_dtype(np.array(vocabulary).dtype) if not isinstance(
        vocabulary[0], str) else tf.string
  dtype = _key_dtype(dtype, fn, key)
  if (dtype == tf.string) != all(isinstance(v, str) for v in vocabulary):
    raise ValueError(f'{fn} {key!r}: vocabulary_list {list(vocabulary)} does not match dtype '
                     f'{dtype.name}.')
  _check_oov(fn, key, num_oov_buckets, default_value)
  return VocabularyListColumn(key, vocabulary, dtype, default_value, num_oov_buckets)


@dataclasses.dataclass(frozen=True)
class VocabularyFileColumn(_VocabularyColumn):
  """Ids by line number in a vocabulary file; see `categorical_column_with_vocabulary_file`."""

  key: str
  vocabulary_file: str
  vocabulary_size: int
  dtype: tf.DType
  default_value: int = -1
  num_oov_buckets: int = 0

  def _initializer(self):
    return tf.lookup.TextFileInitializer(
        self.vocabulary_file, tf.string if self.dtype == tf.string else tf.int64,
        tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
        tf.lookup.TextFileIndex.LINE_NUMBER, vocab_size=self.vocabulary_size)


def categorical_column_with_vocabulary_file(key: str, vocabulary_file: str,
                                            vocabulary_size: int | None = None,
                                            dtype='string', default_value: int | None = None,
                                            num_oov_buckets: int = 0) -> VocabularyFileColumn:
  """Values mapped to their line number in `vocabulary_file` (one value per line).

  `vocabulary_size` (default: the number of lines) keeps only the first lines.
  Out-of-vocabulary values as in `categorical_column_with_vocabulary_list`.
  """
  fn = 'categorical_column_with_vocabulary_file'
  _check_key(key, fn)
  if not vocabulary_file or not tf.io.gfile.exists(vocabulary_file):
    raise ValueError(f'{fn} {key!r}: vocabulary_file {vocabulary_file!r} does not exist.')
  with tf.io.gfile.GFile(vocabulary_file, 'rb') as f:
    lines = sum(1 for _ in f)
  if vocabulary_size is None:
    vocabulary_size = lines
  base.check_positive_int(vocabulary_size, 'vocabulary_size', f'{fn} {key!r}')
  if vocabulary_size > lines:
    raise ValueError(f'{fn} {key!r}: vocabulary_size {vocabulary_size} is larger than the '
                     f'{lines} lines of {vocabulary_file!r}.')
  _check_oov(fn, key, num_oov_buckets, default_value)
  dtype = _key_dtype(dtype, fn, key)
  default = -1 if default_value is None else default_value
  return VocabularyFileColumn(key, vocabulary_file, vocabulary_size, dtype, default,
                              num_oov_buckets)


@dataclasses.dataclass(frozen=True)
class HashedColumn(base.CategoricalColumn):
  """Ids by hashing; see `categorical_column_with_hash_bucket`."""

  key: str
  hash_bucket_size: int
  dtype: tf.DType

  @property
  def name(self) -> str:
    return self.key

  @property
  def num_buckets(self) -> int:
    return self.hash_bucket_size

  @property
  def parse_example_spec(self) -> dict:
    return {self.key: tf.io.VarLenFeature(self.dtype)}

  def sparse_ids(self, cache: host.HostCache):
    x = host.to_sparse(cache.flat(self.key, self.name))
    _check_dtype(self, x, want_string=self.dtype == tf.string)
    text = x.values if x.dtype == tf.string else tf.strings.as_string(x.values)
    ids = tf.strings.to_hash_bucket_fast(text, self.hash_bucket_size)
    return tf.SparseTensor(x.indices, ids, x.dense_shape), None

  def width(self, cache: host.HostCache) -> int:
    return cache.width(self.key, self.name)


def categorical_column_with_hash_bucket(key: str, hash_bucket_size: int,
                                        dtype='string') -> HashedColumn:
  """`Fingerprint64(value) % hash_bucket_size` ids (ints hashed as decimal strings)."""
  fn = 'categorical_column_with_hash_bucket'
  _check_key(key, fn)
  if isinstance(hash_bucket_size, bool) or not isinstance(hash_bucket_size, int) or (
      hash_bucket_size < 1):
    raise ValueError(f'{fn} {key!r}: hash_bucket_size must be at least 1, got '
                     f'{hash_bucket_size!r}.')
  dtype = tf.as_dtype(dtype)
  if dtype != tf.string and not dtype.is_integer:
    raise ValueError(f'{fn} {key!r}: dtype must be string or integer, got {dtype.name}.')
  return HashedColumn(key, hash_bucket_size, dtype)
