"""BinaryAccuracy: how often `predictions > threshold` equals the label."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jestimator.metrics.mean import Mean
from jestimator.metrics.shapes import align


@struct.dataclass
class BinaryAccuracy(Mean):
  """Weighted mean of `labels == (predictions > threshold)` over every element.

  `from_model_output(labels, predictions, weights=None, threshold=0.5)`:
  labels `[batch, ...]` in {0, 1} (a soft label never matches), predictions
  probabilities of the same shape (tf.keras.metrics.BinaryAccuracy).
  """

  @classmethod
  def from_model_output(cls, labels: jax.Array, predictions: jax.Array,
                        weights: jax.Array | None = None,
                        threshold: float = 0.5) -> 'BinaryAccuracy':
    labels, predictions = align(labels, predictions, cls.__name__)
    predicted = (predictions.astype(jnp.float32) > jnp.float32(threshold)).astype(jnp.float32)
    correct = (labels.astype(jnp.float32) == predicted).astype(jnp.float32)
    return super().from_model_output(correct, weights)
