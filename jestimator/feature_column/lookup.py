"""Device half of every id lookup: tf's `safe_embedding_lookup_sparse` on padded ids.

Embedding columns look up their table with it and `LinearModel` looks up its
per-bucket weights with it, so both follow tf's rules on the same arrays:
ids outside `[0, num_buckets)` (padding -1 included) are skipped; for the
`mean` and `sqrtn` combiners weights <= 0 are skipped too (`sum` keeps them);
each looked-up row is clipped to L2 norm `max_norm` before combining; an
example without ids gets zeros.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

COMBINERS = ('mean', 'sqrtn', 'sum')


def clip_by_norm(rows: jax.Array, max_norm: float) -> jax.Array:
  """tf.clip_by_norm over the last axis: `rows * max_norm / max(norm, max_norm)`."""
  sq = jnp.sum(rows * rows, axis=-1, keepdims=True)
  norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), sq)
  return rows * max_norm / jnp.maximum(norm, max_norm)


def combine(table: jax.Array, ids: jax.Array, weights: jax.Array | None, combiner: str,
            max_norm: float | None = None) -> jax.Array:
  """Combined rows of `table` `[num_buckets, d]` for ids `[batch, L]` -> `[batch, d]`.

  Args:
    table: the embedding table (or a linear model's weights `[num_buckets, units]`).
    ids: int ids, -1 (or anything out of range) for no id.
    weights: float32 `[batch, L]`, or None for weight 1 per id.
    combiner: 'sum' (sum of w * row), 'mean' (divided by sum of w) or
      'sqrtn' (divided by sqrt of sum of w**2).
    max_norm: clip each row to this L2 norm first, if given.
  """
  if combiner not in COMBINERS:
    raise ValueError(f'combiner must be one of {COMBINERS}, got {combiner!r}.')
  valid = (ids >= 0) & (ids < table.shape[0])
  w = jnp.ones(ids.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  if combiner != 'sum':
    valid = valid & (w > 0)
  w = jnp.where(valid, w, 0.0)
  rows = jnp.take(table, jnp.where(valid, ids, 0), axis=0)
  if max_norm is not None:
    rows = clip_by_norm(rows, max_norm)
  total = jnp.sum(w[..., None] * rows, axis=1)
  if combiner == 'sum':
    return total
  denom = jnp.sum(w, axis=1) if combiner == 'mean' else jnp.sqrt(jnp.sum(w * w, axis=1))
  denom = denom[:, None]
  return jnp.where(denom > 0, total / jnp.where(denom > 0, denom, 1.0), 0.0)


def multi_hot(ids: jax.Array, weights: jax.Array | None, num_buckets: int) -> jax.Array:
  """float32 `[batch, num_buckets]`: per example, the sum of weights (or counts) per id.

  tf's indicator_column: a repeated id counts twice, out-of-range ids add nothing.
  """
  valid = (ids >= 0) & (ids < num_buckets)
  w = jnp.ones(ids.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  rows = jnp.broadcast_to(jnp.arange(ids.shape[0])[:, None], ids.shape)
  out = jnp.zeros((ids.shape[0], num_buckets), jnp.float32)
  return out.at[rows, jnp.where(valid, ids, num_buckets)].add(w, mode='drop')
