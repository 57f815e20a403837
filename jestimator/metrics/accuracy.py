"""Accuracy: the weighted fraction of predictions equal to labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jestimator.metrics.mean import Mean


@struct.dataclass
class Accuracy(Mean):
  """Weighted mean of `labels == predictions` (tf.metrics.accuracy).

  `from_model_output(labels, predictions, weights=None)`: labels and
  predictions `[batch, ...]` of ids; a trailing axis of size 1 on either side is
  dropped, so `[batch]` and `[batch, 1]` compare as tf.estimator's heads do.
  """

  @classmethod
  def from_model_output(cls, labels: jax.Array, predictions: jax.Array,
                        weights: jax.Array | None = None) -> 'Accuracy':
    labels, predictions = jnp.asarray(labels), jnp.asarray(predictions)
    if labels.ndim == predictions.ndim + 1 and labels.shape[-1] == 1:
      labels = labels[..., 0]
    elif predictions.ndim == labels.ndim + 1 and predictions.shape[-1] == 1:
      predictions = predictions[..., 0]
    if labels.shape != predictions.shape:
      raise ValueError(
          f'Accuracy: labels shape {labels.shape} does not match predictions shape '
          f'{predictions.shape}.')
    correct = (labels == predictions).astype(jnp.float32)
    return super().from_model_output(correct, weights)
