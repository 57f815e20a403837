"""`BinaryClassHead`: one logit per example, sigmoid cross entropy."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jestimator import metrics
from jestimator.export import outputs as export
from jestimator.heads import base
from jestimator.heads.keys import MetricKeys as MK, PredictionKeys as PK
from jestimator.heads.losses import Reduction, call_loss_fn
from jestimator.heads.vocabulary import ClassVocabulary

_PREDICTION_KEYS = (PK.LOGITS, PK.LOGISTIC, PK.PROBABILITIES, PK.CLASS_IDS, PK.CLASSES,
                    PK.ALL_CLASS_IDS, PK.ALL_CLASSES)


class BinaryClassHead(base.Head):
  """Binary classification with logits `[batch, 1]` (tf.estimator.BinaryClassHead).

  Labels `[batch]` or `[batch, 1]`: 0/1 class ids (with `label_vocabulary`,
  the id of a name is its position in the list) or soft labels in [0, 1].

  Predictions: `logits`, `logistic` (sigmoid) `[batch, 1]`; `probabilities`
  `[batch, 2]`; `class_ids` `[batch, 1]` int32; `all_class_ids` `[batch, 2]`.
  `classes` / `all_classes` are ids on device too: `classes_from_ids` maps
  them to names on the host.

  Metrics: average_loss, accuracy, precision, recall, prediction/mean,
  label/mean, accuracy_baseline, auc, auc_precision_recall, and
  accuracy/precision/recall `/positive_threshold_%g` for each of `thresholds`.

  Args:
    weight_column: feature name of per-example weights `[batch]`/`[batch, 1]`.
    thresholds: extra decision thresholds in (0, 1) for the threshold metrics.
    label_vocabulary: two class names; position 0 is the negative class.
    loss_reduction: `Reduction.SUM_OVER_BATCH_SIZE` (default) or `Reduction.SUM`.
    loss_fn: optional `loss_fn(labels, logits[, features]) -> [batch, 1]`.
    name: the head's name (metric key suffix, MultiHead key).
  """

  def __init__(self, weight_column: str | None = None, thresholds: Sequence[float] | None = None,
               label_vocabulary: Sequence[str] | None = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, loss_fn=None,
               name: str | None = None):
    super().__init__(name=name, weight_column=weight_column, loss_reduction=loss_reduction,
                     loss_fn=loss_fn)
    self._thresholds = base.check_thresholds(thresholds, self._describe())
    self._vocabulary = ClassVocabulary(2, label_vocabulary, self._describe())

  @property
  def logits_dimension(self) -> int:
    return 1

  @property
  def label_vocabulary(self) -> tuple[str, ...] | None:
    return self._vocabulary.label_vocabulary

  def classes_from_ids(self, ids: Any) -> np.ndarray:
    """Host side: class names (bytes) for the `classes`/`class_ids` predictions."""
    return self._vocabulary.classes_from_ids(ids)

  def _processed_labels(self, logits: jax.Array, labels: Any) -> jax.Array:
    labels = base.dense_labels(labels, logits, 1, self._describe())
    if self.label_vocabulary is not None and not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(f'{self._describe()}: with a label_vocabulary, labels must be integer '
                       f'class ids (positions in the vocabulary), got dtype {labels.dtype}.')
    labels = labels.astype(jnp.float32)
    base.check_label_range(labels, 2, self._describe())
    return labels

  def _unweighted_loss(self, labels: jax.Array, logits: jax.Array, features: Any) -> jax.Array:
    if self._loss_fn is not None:
      loss = call_loss_fn(self._loss_fn, labels, logits, features, 1)
    else:
      loss = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), labels)
    return base.nan_where_invalid(loss, (labels >= 0) & (labels <= 1))

  def predictions(self, logits: jax.Array, keys: Sequence[str] | None = None) -> dict:
    """The predictions named by `keys` (default all); see the class docstring."""
    keys = base.check_prediction_keys(keys, _PREDICTION_KEYS, self._describe())
    logits = base.check_logits(logits, 1, self._describe())
    two_class_logits = jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1)
    class_ids = jnp.argmax(two_class_logits, axis=-1)[..., None]
    all_class_ids = jnp.broadcast_to(jnp.arange(2, dtype=class_ids.dtype),
                                     logits.shape[:-1] + (2,))
    out = {
        PK.LOGITS: logits,
        PK.LOGISTIC: jax.nn.sigmoid(logits),
        PK.PROBABILITIES: jax.nn.softmax(two_class_logits, axis=-1),
        PK.CLASS_IDS: class_ids,
        PK.CLASSES: class_ids,
        PK.ALL_CLASS_IDS: all_class_ids,
        PK.ALL_CLASSES: all_class_ids,
    }
    return {k: out[k] for k in keys}

  def export_outputs(self, predictions: dict) -> dict[str, export.ExportOutput]:
    """tf.estimator's: `serving_default` and `classification` (probabilities, class names),
    `regression` (logistic), `predict` (every prediction)."""
    classification = export.ClassificationOutput(
        scores=predictions[PK.PROBABILITIES], classes=predictions[PK.ALL_CLASSES],
        class_names=self.classes_from_ids(np.arange(2)))
    return {export.DEFAULT_SERVING_KEY: classification,
            export.CLASSIFY_SERVING_KEY: classification,
            export.REGRESS_SERVING_KEY: export.RegressionOutput(predictions[PK.LOGISTIC]),
            export.PREDICT_SERVING_KEY: export.PredictOutput(predictions)}

  def _batch_metrics(self, labels, predictions, unweighted_loss, weights) -> dict:
    logistic, class_ids = predictions[PK.LOGISTIC], predictions[PK.CLASS_IDS]
    states = {
        MK.LOSS_MEAN: metrics.Mean.from_model_output(unweighted_loss, weights),
        MK.ACCURACY: metrics.Accuracy.from_model_output(labels, class_ids, weights),
        MK.PRECISION: metrics.Precision.from_model_output(labels, class_ids, weights),
        MK.RECALL: metrics.Recall.from_model_output(labels, class_ids, weights),
        MK.PREDICTION_MEAN: metrics.Mean.from_model_output(logistic, weights),
        MK.LABEL_MEAN: metrics.Mean.from_model_output(labels, weights),
        MK.ACCURACY_BASELINE: metrics.AccuracyBaseline.from_model_output(labels, weights),
        MK.AUC: metrics.AUC.from_model_output(labels, logistic, weights),
        MK.AUC_PR: metrics.AUC.from_model_output(labels, logistic, weights, curve='PR'),
    }
    for t in self._thresholds:
      states[MK.ACCURACY_AT_THRESHOLD % t] = metrics.BinaryAccuracy.from_model_output(
          labels, logistic, weights, threshold=t)
      states[MK.PRECISION_AT_THRESHOLD % t] = metrics.Precision.from_model_output(
          labels, logistic, weights, threshold=t)
      states[MK.RECALL_AT_THRESHOLD % t] = metrics.Recall.from_model_output(
          labels, logistic, weights, threshold=t)
    return states
