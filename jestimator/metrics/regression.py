"""MeanSquaredError, RootMeanSquaredError and MeanAbsoluteError (weighted, per element)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jestimator.metrics.mean import Mean


def _errors(labels: jax.Array, predictions: jax.Array, metric: str) -> jax.Array:
  labels = jnp.asarray(labels, jnp.float32)
  predictions = jnp.asarray(predictions, jnp.float32)
  if labels.shape != predictions.shape:
    raise ValueError(f'{metric}: labels shape {labels.shape} does not match predictions shape '
                     f'{predictions.shape}.')
  return predictions - labels


@struct.dataclass
class MeanSquaredError(Mean):
  """Weighted mean of `(predictions - labels)**2` over every element.

  `from_model_output(labels, predictions, weights=None)`: `[batch, ...]` each;
  weights `[batch]`, `[batch, 1]` or the labels' shape.
  """

  @classmethod
  def from_model_output(cls, labels: jax.Array, predictions: jax.Array,
                        weights: jax.Array | None = None) -> 'MeanSquaredError':
    return super().from_model_output(jnp.square(_errors(labels, predictions, cls.__name__)),
                                     weights)


@struct.dataclass
class RootMeanSquaredError(MeanSquaredError):
  """`sqrt` of MeanSquaredError (the state is the mean's, so merging stays exact)."""

  def compute(self) -> jax.Array:
    return jnp.sqrt(super().compute())


@struct.dataclass
class MeanAbsoluteError(Mean):
  """Weighted mean of `|predictions - labels|` over every element."""

  @classmethod
  def from_model_output(cls, labels: jax.Array, predictions: jax.Array,
                        weights: jax.Array | None = None) -> 'MeanAbsoluteError':
    return super().from_model_output(jnp.abs(_errors(labels, predictions, cls.__name__)), weights)
