"""Embedding columns: `embedding_column`, `shared_embeddings`, and their tables.

Host: nothing of their own; they read their categorical column's ids (and
weights). Device: a table `[num_buckets, dimension]` created by the layer
that uses the column (`DenseFeatures`), looked up with `lookup.combine`.
A table is a Flax parameter `<table name>/embedding_weights` (tf's variable
name); with `trainable=False` it lives in the `non_trainable` collection, so
no optimizer (FTRL would rewrite it from its own state) ever touches it.
Shared embeddings name one table after the sorted column names and create it
once per layer.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jestimator.feature_column import base, lookup

NON_TRAINABLE = 'non_trainable'


@dataclasses.dataclass(frozen=True)
class TableSpec:
  """What a layer needs to create an embedding table."""

  name: str
  num_buckets: int
  dimension: int
  initializer: Callable
  trainable: bool


class EmbeddingTable(nn.Module):
  """One embedding table `[num_buckets, dimension]` float32 (see the module docstring)."""

  spec: TableSpec

  @nn.compact
  def __call__(self) -> jax.Array:
    shape = (self.spec.num_buckets, self.spec.dimension)
    if self.spec.trainable:
      return self.param('embedding_weights', self.spec.initializer, shape, jnp.float32)
    return self.variable(NON_TRAINABLE, 'embedding_weights', lambda: self.spec.initializer(
        self.make_rng('params'), shape, jnp.float32)).value


def make_tables(columns: Sequence[base.DenseColumn]) -> dict[str, jax.Array]:
  """Creates (inside the calling module's compact method) each table the columns use, once."""
  tables = {}
  for column in columns:
    spec = column.table_spec
    if spec is None:
      continue
    if spec.name in tables:
      if tables[spec.name][0] != spec:
        raise ValueError(f'embedding table {spec.name!r} is used with two different '
                         f'configurations: {tables[spec.name][0]} and {spec}.')
      continue
    tables[spec.name] = (spec, EmbeddingTable(spec, name=spec.name)())
  return {name: table for name, (_, table) in tables.items()}


def _check_common(fn: str, name: str, dimension, combiner, initializer, max_norm) -> Callable:
  base.check_positive_int(dimension, 'dimension', f'{fn} {name!r}')
  if combiner not in lookup.COMBINERS:
    raise ValueError(f'{fn} {name!r}: combiner must be one of {lookup.COMBINERS}, got '
                     f'{combiner!r}.')
  if initializer is not None and not callable(initializer):
    raise ValueError(f'{fn} {name!r}: initializer must be callable (key, shape, dtype), got '
                     f'{initializer!r}.')
  if max_norm is not None and not max_norm > 0:
    raise ValueError(f'{fn} {name!r}: max_norm must be > 0, got {max_norm!r}.')
  return initializer or jax.nn.initializers.truncated_normal(stddev=1.0 / math.sqrt(dimension))


@dataclasses.dataclass(frozen=True)
class EmbeddingColumn(base.DenseColumn):
  """See `embedding_column`."""

  categorical_column: base.CategoricalColumn
  dimension: int
  combiner: str = 'mean'
  initializer: Callable | None = None
  max_norm: float | None = None
  trainable: bool = True

  @property
  def name(self) -> str:
    return f'{self.categorical_column.name}_embedding'

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
    return self.dimension

  @property
  def table_spec(self) -> TableSpec:
    return TableSpec(self.name, self.categorical_column.num_buckets, self.dimension,
                     self.initializer, self.trainable)

  def dense_tensor(self, features, table=None) -> jax.Array:
    if table is None:
      raise ValueError(f'embedding column {self.name!r} needs its table: use it through '
                       'DenseFeatures or LinearModel.')
    ids, weights = self.categorical_column.ids_and_weights(features)
    return lookup.combine(table, ids, weights, self.combiner, self.max_norm)


def embedding_column(categorical_column: base.CategoricalColumn, dimension: int,
                     combiner: str = 'mean', initializer: Callable | None = None,
                     max_norm: float | None = None, trainable: bool = True) -> EmbeddingColumn:
  """A dense `[batch, dimension]` embedding of a categorical column (tf.feature_column.embedding_column).

  Args:
    categorical_column: the ids to embed.
    dimension: the embedding size.
    combiner: how an example's several ids combine: 'mean', 'sqrtn' or 'sum'.
    initializer: a JAX initializer `(key, shape, dtype)`; default truncated
      normal with stddev `1/sqrt(dimension)`, as tf.
    max_norm: clip each embedding to this L2 norm before combining.
    trainable: False keeps the table out of the optimizer.
  """
  if not isinstance(categorical_column, base.CategoricalColumn):
    raise ValueError('embedding_column: categorical_column must be a categorical column, got '
                     f'{categorical_column!r}.')
  name = f'{categorical_column.name}_embedding'
  initializer = _check_common('embedding_column', name, dimension, combiner, initializer,
                              max_norm)
  return EmbeddingColumn(categorical_column, dimension, combiner, initializer, max_norm,
                         bool(trainable))


@dataclasses.dataclass(frozen=True)
class SharedEmbeddingColumn(EmbeddingColumn):
  """One of the columns of `shared_embeddings`: its own ids, a shared table."""

  shared_embedding_collection_name: str = ''

  @property
  def name(self) -> str:
    return f'{self.categorical_column.name}_shared_embedding'

  @property
  def table_spec(self) -> TableSpec:
    return TableSpec(self.shared_embedding_collection_name, self.categorical_column.num_buckets,
                     self.dimension, self.initializer, self.trainable)


def shared_embeddings(categorical_columns: Sequence[base.CategoricalColumn], dimension: int,
                      combiner: str = 'mean', initializer: Callable | None = None,
                      shared_embedding_collection_name: str | None = None,
                      max_norm: float | None = None,
                      trainable: bool = True) -> list[SharedEmbeddingColumn]:
  """Embedding columns sharing one table (tf.feature_column.shared_embeddings).

  The categorical columns must have the same number of buckets. The table is
  named `shared_embedding_collection_name`, by default the sorted column names
  joined by '_' plus '_shared_embedding'.
  """
  columns = list(categorical_columns)
  if not columns or not all(isinstance(c, base.CategoricalColumn) for c in columns):
    raise ValueError('shared_embeddings: categorical_columns must be a non-empty list of '
                     f'categorical columns, got {categorical_columns!r}.')
  for c in columns[1:]:
    if c.num_buckets != columns[0].num_buckets:
      raise ValueError(
          'shared_embeddings: all categorical_columns must have the same number of buckets; '
          f'{c.name!r} has {c.num_buckets}, {columns[0].name!r} has {columns[0].num_buckets}.')
  collection = shared_embedding_collection_name or (
      '_'.join(sorted(c.name for c in columns)) + '_shared_embedding')
  initializer = _check_common('shared_embeddings', collection, dimension, combiner, initializer,
                              max_norm)
  return [SharedEmbeddingColumn(c, dimension, combiner, initializer, max_norm, bool(trainable),
                                collection) for c in columns]
