"""AUC of the ROC or precision-recall curve, as tf.keras.metrics.AUC computes it.

The state is four confusion counts at `num_thresholds` thresholds (default 200):
`-eps, 1/(n-1), ..., (n-2)/(n-1), 1+eps` with eps = 1e-7 (Keras' epsilon), so
every prediction in [0, 1] is above the first threshold and below the last.
A prediction p is counted above the thresholds `0 .. ceil(p * (n-1)) - 1`
(Keras' bucketing of evenly spaced thresholds, reproduced exactly). Labels
are positive when non-zero; predictions are clipped to [0, 1]. `compute()`
uses Keras' interpolation: trapezoids for ROC, the Davis & Goadrich (2006)
interpolation for PR, so values match tf.estimator's `auc` and
`auc_precision_recall`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jestimator.metrics.base import SumMetric, batch_weights
from jestimator.metrics.shapes import align, divide_no_nan

CURVES = ('ROC', 'PR')


@struct.dataclass
class AUC(SumMetric):
  """Area under the ROC (`curve='ROC'`) or precision-recall (`curve='PR'`) curve.

  `from_model_output(labels, predictions, weights=None, num_thresholds=200,
  curve='ROC')`: labels and predictions `[batch, ...]` (every element is one
  binary decision, as in Keras' `multi_label=False`); weights broadcast to them.
  Each count is float32 `[num_thresholds]`, index i = "prediction > threshold i".
  """

  true_positives: jax.Array
  false_positives: jax.Array
  true_negatives: jax.Array
  false_negatives: jax.Array
  curve: str = struct.field(pytree_node=False, default='ROC')

  @classmethod
  def empty(cls, num_thresholds: int = 200, curve: str = 'ROC') -> 'AUC':
    _check(num_thresholds, curve)
    zeros = jnp.zeros((num_thresholds,), jnp.float32)
    return cls(zeros, zeros, zeros, zeros, curve=curve)

  @classmethod
  def from_model_output(cls, labels: jax.Array, predictions: jax.Array,
                        weights: jax.Array | None = None, num_thresholds: int = 200,
                        curve: str = 'ROC') -> 'AUC':
    _check(num_thresholds, curve)
    labels, predictions = align(labels, predictions, cls.__name__)
    predictions = jnp.clip(predictions.astype(jnp.float32), 0.0, 1.0)
    w = batch_weights(predictions, weights).reshape(-1)
    positive = (labels != 0).reshape(-1)
    true_w = jnp.where(positive, w, 0.0)
    false_w = jnp.where(positive, 0.0, w)
    # The last threshold index whose threshold lies strictly below p.
    bucket = jnp.ceil(predictions.reshape(-1) * jnp.float32(num_thresholds - 1)) - 1
    bucket = jnp.maximum(bucket, 0).astype(jnp.int32)
    tp = _reverse_cumsum(jax.ops.segment_sum(true_w, bucket, num_thresholds))
    fp = _reverse_cumsum(jax.ops.segment_sum(false_w, bucket, num_thresholds))
    return cls(true_positives=tp, false_positives=fp, true_negatives=jnp.sum(false_w) - fp,
               false_negatives=jnp.sum(true_w) - tp, curve=curve)

  def merge(self, other: 'AUC') -> 'AUC':
    if other.curve != self.curve:
      raise ValueError(f'AUC: cannot merge a {self.curve} state with a {other.curve} state.')
    return super().merge(other)

  def compute(self) -> jax.Array:
    if self.curve == 'PR':
      return self._interpolate_pr_auc()
    tp, fp, tn, fn = (self.true_positives, self.false_positives, self.true_negatives,
                      self.false_negatives)
    recall = divide_no_nan(tp, tp + fn)
    fp_rate = divide_no_nan(fp, fp + tn)
    heights = (recall[:-1] + recall[1:]) / 2.0
    return jnp.sum((fp_rate[:-1] - fp_rate[1:]) * heights)

  def _interpolate_pr_auc(self) -> jax.Array:
    """Keras' `interpolate_pr_auc`: precision interpolated linearly in tp between thresholds."""
    tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
    dtp = tp[:-1] - tp[1:]
    p = tp + fp
    dp = p[:-1] - p[1:]
    prec_slope = divide_no_nan(dtp, jnp.maximum(dp, 0.0))
    intercept = tp[1:] - prec_slope * p[1:]
    safe_p_ratio = jnp.where((p[:-1] > 0) & (p[1:] > 0),
                             divide_no_nan(p[:-1], jnp.maximum(p[1:], 0.0)),
                             jnp.ones_like(p[1:]))
    increment = divide_no_nan(prec_slope * (dtp + intercept * jnp.log(safe_p_ratio)),
                              jnp.maximum(tp[1:] + fn[1:], 0.0))
    return jnp.sum(increment)


def _reverse_cumsum(x: jax.Array) -> jax.Array:
  return jnp.cumsum(x[::-1])[::-1]


def _check(num_thresholds: int, curve: str) -> None:
  if curve not in CURVES:
    raise ValueError(f'AUC: curve must be one of {CURVES}, got {curve!r}.')
  if not isinstance(num_thresholds, int) or num_thresholds <= 1:
    raise ValueError(f'AUC: num_thresholds must be an int > 1, got {num_thresholds!r}.')
