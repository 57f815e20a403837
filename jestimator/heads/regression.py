"""`RegressionHead`: real-valued targets, squared error by default."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jestimator import metrics
from jestimator.export import outputs as export
from jestimator.heads import base
from jestimator.heads.keys import MetricKeys as MK, PredictionKeys as PK
from jestimator.heads.losses import Reduction, call_loss_fn


class RegressionHead(base.Head):
  """Regression with logits `[batch, label_dimension]` (tf.estimator.RegressionHead).

  Labels `[batch, label_dimension]` (or `[batch]` when label_dimension is 1).
  The loss is `(logits - labels)**2` per element, or `loss_fn`'s; it is
  computed on the logits, before `inverse_link_fn`.

  Predictions: `predictions` = `inverse_link_fn(logits)` (the logits without
  one); with an `inverse_link_fn` also `logits`.

  Metrics: average_loss, prediction/mean, label/mean (weighted, per element).

  Args:
    label_dimension: the number of regression targets per example.
    weight_column: feature name of weights `[batch]`, `[batch, 1]` or
      `[batch, label_dimension]` (one weight per target).
    loss_reduction: `Reduction.SUM_OVER_BATCH_SIZE` (default; divides by
      batch * label_dimension) or `Reduction.SUM`.
    loss_fn: optional `loss_fn(labels, logits[, features]) -> [batch, label_dimension]`.
    inverse_link_fn: maps logits to predictions (e.g. `jnp.exp`).
    name: the head's name (metric key suffix, MultiHead key).
  """

  _allow_per_logit_weights = True

  def __init__(self, label_dimension: int = 1, weight_column: str | None = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, loss_fn=None,
               inverse_link_fn: Callable[[jax.Array], jax.Array] | None = None,
               name: str | None = None):
    if not isinstance(label_dimension, int) or label_dimension < 1:
      raise ValueError(f'RegressionHead: Invalid label_dimension {label_dimension!r}; it must '
                       'be an int >= 1.')
    super().__init__(name=name, weight_column=weight_column, loss_reduction=loss_reduction,
                     loss_fn=loss_fn)
    self._label_dimension = label_dimension
    self._inverse_link_fn = inverse_link_fn

  @property
  def logits_dimension(self) -> int:
    return self._label_dimension

  def _label_check(self, labels: jax.Array) -> tuple[jax.Array, str] | None:
    """(valid mask, description) for heads whose labels have a domain; None if any real."""
    return None

  def _processed_labels(self, logits: jax.Array, labels: Any) -> jax.Array:
    labels = base.dense_labels(labels, logits, self._label_dimension, self._describe())
    labels = labels.astype(jnp.float32)
    check = self._label_check(labels)
    if check is not None:
      base.check_label_values(labels, check[0], self._describe(), check[1])
    return labels

  def _base_loss(self, labels: jax.Array, logits: jax.Array) -> jax.Array:
    return optax.squared_error(logits.astype(jnp.float32), labels)

  def _unweighted_loss(self, labels: jax.Array, logits: jax.Array, features: Any) -> jax.Array:
    if self._loss_fn is not None:
      loss = call_loss_fn(self._loss_fn, labels, logits, features, self._label_dimension)
    else:
      loss = self._base_loss(labels, logits)
    check = self._label_check(labels)
    return loss if check is None else base.nan_where_invalid(loss, check[0])

  def predictions(self, logits: jax.Array, keys: Sequence[str] | None = None) -> dict:
    """The predictions named by `keys` (default all); see the class docstring."""
    valid = (PK.PREDICTIONS, PK.LOGITS) if self._inverse_link_fn else (PK.PREDICTIONS,)
    keys = base.check_prediction_keys(keys, valid, self._describe())
    logits = base.check_logits(logits, self._label_dimension, self._describe())
    out = {PK.LOGITS: logits, PK.PREDICTIONS: logits}
    if self._inverse_link_fn is not None:
      out[PK.PREDICTIONS] = self._inverse_link_fn(logits)
    return {k: out[k] for k in keys}

  def export_outputs(self, predictions: dict) -> dict[str, export.ExportOutput]:
    """tf.estimator's: `serving_default` and `regression` (predictions), `predict`."""
    regression = export.RegressionOutput(predictions[PK.PREDICTIONS])
    return {export.DEFAULT_SERVING_KEY: regression, export.REGRESS_SERVING_KEY: regression,
            export.PREDICT_SERVING_KEY: export.PredictOutput(predictions)}

  def _batch_metrics(self, labels, predictions, unweighted_loss, weights) -> dict:
    return {
        MK.LOSS_MEAN: metrics.Mean.from_model_output(unweighted_loss, weights),
        MK.PREDICTION_MEAN: metrics.Mean.from_model_output(predictions[PK.PREDICTIONS], weights),
        MK.LABEL_MEAN: metrics.Mean.from_model_output(labels, weights),
    }
