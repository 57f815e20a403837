"""`PoissonRegressionHead`: counts, log-link Poisson loss, `exp` predictions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jestimator.heads.losses import Reduction
from jestimator.heads.regression import RegressionHead


def log_poisson_loss(labels: jax.Array, log_input: jax.Array,
                     compute_full_loss: bool = False) -> jax.Array:
  """`exp(log_input) - log_input * labels` per element (tf.nn.log_poisson_loss).

  With `compute_full_loss`, adds Stirling's approximation of `log(labels!)`,
  `labels * log(labels) - labels + 0.5 * log(2 * pi * labels)`, where labels > 1.
  """
  loss = jnp.exp(log_input) - log_input * labels
  if not compute_full_loss:
    return loss
  safe = jnp.where(labels > 1, labels, 1.0)
  stirling = safe * jnp.log(safe) - safe + 0.5 * jnp.log(jnp.float32(2 * math.pi) * safe)
  return loss + jnp.where((labels >= 0) & (labels <= 1), 0.0, stirling)


class PoissonRegressionHead(RegressionHead):
  """Poisson regression (tf.estimator.PoissonRegressionHead): logits are log rates.

  Labels: counts >= 0, `[batch, label_dimension]`. Predictions:
  `predictions` = `exp(logits)`, and `logits`. Metrics as RegressionHead.

  Args:
    label_dimension, weight_column, loss_reduction, name: as RegressionHead.
    compute_full_loss: add the Stirling term (constant in the logits).
  """

  def __init__(self, label_dimension: int = 1, weight_column: str | None = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
               compute_full_loss: bool = True, name: str | None = None):
    super().__init__(label_dimension=label_dimension, weight_column=weight_column,
                     loss_reduction=loss_reduction, inverse_link_fn=jnp.exp, name=name)
    self._compute_full_loss = compute_full_loss

  def _label_check(self, labels: jax.Array):
    return labels >= 0, 'counts >= 0'

  def _base_loss(self, labels: jax.Array, logits: jax.Array) -> jax.Array:
    return log_poisson_loss(labels, logits.astype(jnp.float32), self._compute_full_loss)
