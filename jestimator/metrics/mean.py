"""Weighted mean (tf.metrics.mean / tf.keras.metrics.Mean)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jestimator.metrics.base import SumMetric, batch_weights


@struct.dataclass
class Mean(SumMetric):
  """sum(w * v) / sum(w) over every element seen; 0 when nothing was seen."""

  total: jax.Array
  count: jax.Array

  @classmethod
  def empty(cls) -> 'Mean':
    return cls(total=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.float32))

  @classmethod
  def from_model_output(cls, values: jax.Array, weights: jax.Array | None = None) -> 'Mean':
    """Args: values `[batch, ...]` (or a scalar); weights broadcastable to it."""
    values = jnp.asarray(values, jnp.float32)
    w = batch_weights(values, weights)
    return cls(total=jnp.sum(values * w), count=jnp.sum(w))

  def compute(self) -> jax.Array:
    return jnp.where(self.count > 0, self.total / jnp.where(self.count > 0, self.count, 1.0), 0.0)
