"""The metric protocol: immutable sufficient statistics with four verbs.

A metric is a `flax.struct` dataclass of arrays (CLU / metrax style):

  empty()                 -- the identity of `merge` (a classmethod),
  from_model_output(...)  -- the statistics of one batch (a classmethod),
  merge(other)            -- combine two states (associative, pure),
  compute()               -- the metric value.

All four are pure, so states are built inside the compiled eval step, merged
across batches on device, and only `compute()`d on the host at the end.
`from_model_output` folds in per-example weights and the evaluation padding
mask (`jestimator.example_mask.example_mask`), so padded examples never count.
User metrics subclass `Metric` and use `batch_weights` the same way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jestimator.example_mask import example_mask


def batch_weights(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """float32 weights broadcast to `values.shape`, times the padding mask.

  Args:
    values: `[batch, ...]` per-example values.
    weights: None, a scalar, or an array broadcastable to `values` after
      trailing dimensions are added (`[batch]` weighs whole examples).
  """
  values = jnp.asarray(values)
  w = jnp.ones(values.shape, jnp.float32) if weights is None else jnp.asarray(weights, jnp.float32)
  w = _broadcast_leading(w, values.shape)
  mask = example_mask()
  if mask is not None and values.ndim:
    w = w * _broadcast_leading(mask.astype(jnp.float32), values.shape)
  return w


def _broadcast_leading(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Broadcasts `x` against `shape` aligning leading (batch) dimensions."""
  x = jnp.reshape(x, x.shape + (1,) * max(0, len(shape) - x.ndim))
  return jnp.broadcast_to(x, shape)


@struct.dataclass
class Metric:
  """Base class of metric states; see the module docstring for the protocol."""

  @classmethod
  def empty(cls) -> 'Metric':
    raise NotImplementedError(f'{cls.__name__}.empty')

  @classmethod
  def from_model_output(cls, *args, **kwargs) -> 'Metric':
    raise NotImplementedError(f'{cls.__name__}.from_model_output')

  def merge(self, other: 'Metric') -> 'Metric':
    raise NotImplementedError(f'{type(self).__name__}.merge')

  def compute(self) -> jax.Array:
    raise NotImplementedError(f'{type(self).__name__}.compute')


@struct.dataclass
class SumMetric(Metric):
  """A metric whose statistics add up (counts, weighted sums): `merge` is a leafwise sum.

  Subclasses declare their array fields and `from_model_output`/`compute`;
  static fields (thresholds, curve) must agree, or the tree structures differ.
  """

  def merge(self, other: 'SumMetric') -> 'SumMetric':
    return jax.tree.map(jnp.add, self, other)
