"""`MultiClassHead`: one of `n_classes` (> 2) classes, softmax cross entropy."""

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

_PREDICTION_KEYS = (PK.LOGITS, PK.PROBABILITIES, PK.CLASS_IDS, PK.CLASSES, PK.ALL_CLASS_IDS,
                    PK.ALL_CLASSES)


class MultiClassHead(base.Head):
  """Multi-class classification with logits `[batch, n_classes]` (tf.estimator.MultiClassHead).

  Labels `[batch]` or `[batch, 1]` integer class ids in `[0, n_classes)`; with
  `label_vocabulary` an id is the name's position in the list.

  Predictions: `logits`, `probabilities` (softmax) `[batch, n_classes]`;
  `class_ids` `[batch, 1]` int32 (argmax; ties pick the lowest id);
  `all_class_ids` `[batch, n_classes]`. `classes` / `all_classes` are ids on
  device; `classes_from_ids` maps them to names on the host.

  Metrics: average_loss, accuracy.

  Args:
    n_classes: number of classes, > 2 (use BinaryClassHead for two).
    weight_column: feature name of per-example weights `[batch]`/`[batch, 1]`.
    label_vocabulary: `n_classes` class names.
    loss_reduction: `Reduction.SUM_OVER_BATCH_SIZE` (default) or `Reduction.SUM`.
    loss_fn: optional `loss_fn(labels, logits[, features]) -> [batch, 1]`.
    name: the head's name (metric key suffix, MultiHead key).
  """

  def __init__(self, n_classes: int, weight_column: str | None = None,
               label_vocabulary: Sequence[str] | None = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, loss_fn=None,
               name: str | None = None):
    if not isinstance(n_classes, (int, np.integer)) or n_classes <= 2:
      raise ValueError(f'MultiClassHead: n_classes must be > 2: {n_classes!r} (use '
                       'BinaryClassHead for two classes).')
    super().__init__(name=name, weight_column=weight_column, loss_reduction=loss_reduction,
                     loss_fn=loss_fn)
    self._n_classes = int(n_classes)
    self._vocabulary = ClassVocabulary(self._n_classes, label_vocabulary, self._describe())

  @property
  def logits_dimension(self) -> int:
    return self._n_classes

  @property
  def n_classes(self) -> int:
    return self._n_classes

  @property
  def label_vocabulary(self) -> tuple[str, ...] | None:
    return self._vocabulary.label_vocabulary

  def classes_from_ids(self, ids: Any) -> np.ndarray:
    """Host side: class names (bytes) for the `classes`/`class_ids` predictions."""
    return self._vocabulary.classes_from_ids(ids)

  def _valid(self, labels: jax.Array) -> jax.Array:
    return (labels >= 0) & (labels < self._n_classes)

  def _processed_labels(self, logits: jax.Array, labels: Any) -> jax.Array:
    labels = base.dense_labels(labels, logits, 1, self._describe())
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(f'{self._describe()}: labels must be integer class ids, got dtype '
                       f'{labels.dtype}.')
    base.check_label_range(labels, self._n_classes, self._describe())
    return labels

  def _unweighted_loss(self, labels: jax.Array, logits: jax.Array, features: Any) -> jax.Array:
    if self._loss_fn is not None:
      loss = call_loss_fn(self._loss_fn, labels, logits, features, 1)
    else:
      safe = jnp.clip(labels[..., 0], 0, self._n_classes - 1)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
      loss = loss[..., None]
    return base.nan_where_invalid(loss, self._valid(labels))

  def predictions(self, logits: jax.Array, keys: Sequence[str] | None = None) -> dict:
    """The predictions named by `keys` (default all); see the class docstring."""
    keys = base.check_prediction_keys(keys, _PREDICTION_KEYS, self._describe())
    logits = base.check_logits(logits, self._n_classes, self._describe())
    class_ids = jnp.argmax(logits, axis=-1)[..., None]
    all_class_ids = jnp.broadcast_to(jnp.arange(self._n_classes, dtype=class_ids.dtype),
                                     logits.shape)
    out = {
        PK.LOGITS: logits,
        PK.PROBABILITIES: jax.nn.softmax(logits, axis=-1),
        PK.CLASS_IDS: class_ids,
        PK.CLASSES: class_ids,
        PK.ALL_CLASS_IDS: all_class_ids,
        PK.ALL_CLASSES: all_class_ids,
    }
    return {k: out[k] for k in keys}

  def export_outputs(self, predictions: dict) -> dict[str, export.ExportOutput]:
    """tf.estimator's: `serving_default` and `classification` (probabilities, class names),
    `predict` (every prediction)."""
    classification = export.ClassificationOutput(
        scores=predictions[PK.PROBABILITIES], classes=predictions[PK.ALL_CLASSES],
        class_names=self.classes_from_ids(np.arange(self._n_classes)))
    return {export.DEFAULT_SERVING_KEY: classification,
            export.CLASSIFY_SERVING_KEY: classification,
            export.PREDICT_SERVING_KEY: export.PredictOutput(predictions)}

  def _batch_metrics(self, labels, predictions, unweighted_loss, weights) -> dict:
    return {
        MK.LOSS_MEAN: metrics.Mean.from_model_output(unweighted_loss, weights),
        MK.ACCURACY: metrics.Accuracy.from_model_output(labels, predictions[PK.CLASS_IDS],
                                                        weights),
    }
