"""Precision and Recall at a threshold (tf.keras.metrics.Precision / Recall).

A prediction counts as positive when it is strictly greater than `threshold`
(default 0.5, so class ids 0/1 work as predictions); a label counts as
positive when it is non-zero, as in Keras (this matters for soft labels).
Counts are weighted by per-example weights and the evaluation padding mask.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jestimator.metrics.base import SumMetric, batch_weights
from jestimator.metrics.shapes import align, divide_no_nan


def confusion_counts(labels: jax.Array, predictions: jax.Array, weights: jax.Array | None,
                     threshold: float, metric: str) -> dict[str, jax.Array]:
  """Weighted true/false positive/negative counts (float32 scalars) at `threshold`."""
  labels, predictions = align(labels, predictions, metric)
  predictions = predictions.astype(jnp.float32)
  w = batch_weights(predictions, weights)
  pred_pos = predictions > jnp.float32(threshold)
  label_pos = labels != 0
  return {
      'true_positives': jnp.sum(jnp.where(label_pos & pred_pos, w, 0.0)),
      'false_positives': jnp.sum(jnp.where(~label_pos & pred_pos, w, 0.0)),
      'false_negatives': jnp.sum(jnp.where(label_pos & ~pred_pos, w, 0.0)),
      'true_negatives': jnp.sum(jnp.where(~label_pos & ~pred_pos, w, 0.0)),
  }


@struct.dataclass
class Precision(SumMetric):
  """true_positives / (true_positives + false_positives); 0 when nothing was predicted.

  `from_model_output(labels, predictions, weights=None, threshold=0.5)`:
  labels and predictions `[batch, ...]` (probabilities or 0/1 ids).
  """

  true_positives: jax.Array
  false_positives: jax.Array

  @classmethod
  def empty(cls) -> 'Precision':
    zero = jnp.zeros((), jnp.float32)
    return cls(true_positives=zero, false_positives=zero)

  @classmethod
  def from_model_output(cls, labels: jax.Array, predictions: jax.Array,
                        weights: jax.Array | None = None, threshold: float = 0.5) -> 'Precision':
    c = confusion_counts(labels, predictions, weights, threshold, cls.__name__)
    return cls(true_positives=c['true_positives'], false_positives=c['false_positives'])

  def compute(self) -> jax.Array:
    return divide_no_nan(self.true_positives, self.true_positives + self.false_positives)


@struct.dataclass
class Recall(SumMetric):
  """true_positives / (true_positives + false_negatives); 0 when there was no positive.

  `from_model_output(labels, predictions, weights=None, threshold=0.5)`, as Precision.
  """

  true_positives: jax.Array
  false_negatives: jax.Array

  @classmethod
  def empty(cls) -> 'Recall':
    zero = jnp.zeros((), jnp.float32)
    return cls(true_positives=zero, false_negatives=zero)

  @classmethod
  def from_model_output(cls, labels: jax.Array, predictions: jax.Array,
                        weights: jax.Array | None = None, threshold: float = 0.5) -> 'Recall':
    c = confusion_counts(labels, predictions, weights, threshold, cls.__name__)
    return cls(true_positives=c['true_positives'], false_negatives=c['false_negatives'])

  def compute(self) -> jax.Array:
    return divide_no_nan(self.true_positives, self.true_positives + self.false_negatives)
