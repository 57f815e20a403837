"""`LogisticRegressionHead`: targets in [0, 1], sigmoid cross entropy, `sigmoid` predictions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jestimator.heads.losses import Reduction
from jestimator.heads.regression import RegressionHead


class LogisticRegressionHead(RegressionHead):
  """Logistic regression (tf.estimator.LogisticRegressionHead).

  Labels: values in [0, 1], `[batch, 1]`. Loss: sigmoid cross entropy of the
  logits. Predictions: `predictions` = `sigmoid(logits)`, and `logits`.
  Metrics as RegressionHead.

  Args:
    weight_column, loss_reduction, name: as RegressionHead.
  """

  def __init__(self, weight_column: str | None = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, name: str | None = None):
    super().__init__(label_dimension=1, weight_column=weight_column,
                     loss_reduction=loss_reduction, inverse_link_fn=jax.nn.sigmoid, name=name)

  def _label_check(self, labels: jax.Array):
    return (labels >= 0) & (labels <= 1), 'in range [0, 1]'

  def _base_loss(self, labels: jax.Array, logits: jax.Array) -> jax.Array:
    return optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
