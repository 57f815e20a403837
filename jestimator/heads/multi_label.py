"""`MultiLabelHead`: any subset of `n_classes` classes, per-class sigmoid cross entropy."""

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

_PREDICTION_KEYS = (PK.LOGITS, PK.PROBABILITIES, PK.CLASSES)


def multi_hot_from_ids(ids: Any, n_classes: int) -> jax.Array:
  """Multi-hot labels `[batch, n_classes]` (int32) from padded class ids `[batch, k]`.

  The JAX form of tf.estimator's SparseTensor labels: row i lists the ids of
  example i, padded with -1 (a row may be all -1: no label). A repeated id
  counts once. Out-of-range ids raise when `ids` is concrete; under jit their
  row becomes all -1, an invalid label, so the head's loss for it is NaN.
  """
  ids = jnp.asarray(ids)
  if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f'multi_hot_from_ids: ids must be integer [batch, k], got '
                     f'{ids.dtype} {ids.shape}.')
  valid = (ids >= -1) & (ids < n_classes)
  base.check_label_values(ids, valid, 'multi_hot_from_ids',
                          f'class ids in [0, {n_classes}) or -1 for padding')
  hot = jnp.max(jax.nn.one_hot(ids, n_classes, dtype=jnp.int32), axis=-2, initial=0)
  return jnp.where(jnp.all(valid, axis=-1, keepdims=True), hot, -1)


class MultiLabelHead(base.Head):
  """Multi-label classification with logits `[batch, n_classes]` (tf.estimator.MultiLabelHead).

  Labels: multi-hot `[batch, n_classes]` of 0/1. A `tf.SparseTensor` of ids
  (or of names, with `label_vocabulary`), as `tf.io.parse_example` gives for a
  `VarLenFeature`, becomes multi-hot in the input pipeline: pass
  `input_transforms=heads.host_transforms(head)` (see `sparse_labels`).
  Padded ids already on device: `multi_hot_from_ids`. With
  `label_vocabulary` the id of a name is its position in the list.

  Predictions: `logits`, `probabilities` (sigmoid) `[batch, n_classes]`;
  `classes` `[batch, n_classes]`: every class id, as ids on device (map with
  `classes_from_ids` on the host).

  Metrics: average_loss (the per-example loss is the mean over classes), auc,
  auc_precision_recall (over every (example, class) pair), accuracy/precision/
  recall `/positive_threshold_%g` for each of `thresholds`, and for each class
  of `classes_for_class_based_metrics`: probability_mean, auc,
  auc_precision_recall `/class<id>` (`/<name>` with a vocabulary).

  Args:
    n_classes: number of classes, > 1.
    weight_column: feature name of per-example weights `[batch]`/`[batch, 1]`.
    thresholds: decision thresholds in (0, 1) for the threshold metrics.
    label_vocabulary: `n_classes` class names.
    loss_reduction: `Reduction.SUM_OVER_BATCH_SIZE` (default) or `Reduction.SUM`.
    loss_fn: optional `loss_fn(labels, logits[, features]) -> [batch, 1]`.
    classes_for_class_based_metrics: class ids, or names from the vocabulary.
    name: the head's name (metric key suffix, MultiHead key).
  """

  def __init__(self, n_classes: int, weight_column: str | None = None,
               thresholds: Sequence[float] | None = None,
               label_vocabulary: Sequence[str] | None = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, loss_fn=None,
               classes_for_class_based_metrics: Sequence[int | str] | None = None,
               name: str | None = None):
    if not isinstance(n_classes, (int, np.integer)) or n_classes <= 1:
      raise ValueError(f'MultiLabelHead: n_classes must be > 1 for multi-label '
                       f'classification. Given: {n_classes!r}')
    super().__init__(name=name, weight_column=weight_column, loss_reduction=loss_reduction,
                     loss_fn=loss_fn)
    self._n_classes = int(n_classes)
    self._thresholds = base.check_thresholds(thresholds, self._describe())
    self._vocabulary = ClassVocabulary(self._n_classes, label_vocabulary, self._describe())
    self._class_ids = self._class_metric_ids(classes_for_class_based_metrics or ())

  def _class_metric_ids(self, classes: Sequence[int | str]) -> tuple[int, ...]:
    vocab = self.label_vocabulary
    ids = []
    for c in classes:
      if isinstance(c, str):
        if vocab is None:
          raise ValueError(f'{self._describe()}: label_vocabulary must be provided when '
                           f'classes_for_class_based_metrics are strings ({c!r}).')
        if c not in vocab:
          raise ValueError(f'{self._describe()}: class {c!r} of classes_for_class_based_'
                           f'metrics is not in label_vocabulary {list(vocab)}.')
        ids.append(vocab.index(c))
      elif isinstance(c, (int, np.integer)) and 0 <= c < self._n_classes:
        ids.append(int(c))
      else:
        raise ValueError(f'{self._describe()}: All classes_for_class_based_metrics must be '
                         f'in range [0, {self._n_classes - 1}]. Given: {c!r}')
    return tuple(ids)

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
    """Host side: class names (bytes) for the `classes` prediction."""
    return self._vocabulary.classes_from_ids(ids)

  def _valid(self, labels: jax.Array) -> jax.Array:
    return (labels == 0) | (labels == 1)

  def _processed_labels(self, logits: jax.Array, labels: Any) -> jax.Array:
    try:
      labels = base.dense_labels(labels, logits, self._n_classes, self._describe())
    except ValueError as e:
      raise ValueError(f'{e} Labels must be multi-hot [batch, n_classes]; convert class ids '
                       'with jestimator.heads.multi_hot_from_ids.') from None
    base.check_label_values(labels, self._valid(labels), self._describe(), '0 or 1 (multi-hot)')
    return labels

  def _unweighted_loss(self, labels: jax.Array, logits: jax.Array, features: Any) -> jax.Array:
    if self._loss_fn is not None:
      loss = call_loss_fn(self._loss_fn, labels, logits, features, 1)
    else:
      per_class = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                                     labels.astype(jnp.float32))
      loss = jnp.mean(per_class, axis=-1, keepdims=True)
    return base.nan_where_invalid(loss, self._valid(labels))

  def predictions(self, logits: jax.Array, keys: Sequence[str] | None = None) -> dict:
    """The predictions named by `keys` (default all); see the class docstring."""
    keys = base.check_prediction_keys(keys, _PREDICTION_KEYS, self._describe())
    logits = base.check_logits(logits, self._n_classes, self._describe())
    out = {
        PK.LOGITS: logits,
        PK.PROBABILITIES: jax.nn.sigmoid(logits),
        PK.CLASSES: jnp.broadcast_to(jnp.arange(self._n_classes, dtype=jnp.int32), logits.shape),
    }
    return {k: out[k] for k in keys}

  def export_outputs(self, predictions: dict) -> dict[str, export.ExportOutput]:
    """tf.estimator's: `serving_default` and `classification` (probabilities, class names),
    `predict` (every prediction)."""
    classification = export.ClassificationOutput(
        scores=predictions[PK.PROBABILITIES], classes=predictions[PK.CLASSES],
        class_names=self.classes_from_ids(np.arange(self._n_classes)))
    return {export.DEFAULT_SERVING_KEY: classification,
            export.CLASSIFY_SERVING_KEY: classification,
            export.PREDICT_SERVING_KEY: export.PredictOutput(predictions)}

  def _class_name(self, class_id: int) -> tuple[str, str, str]:
    if self.label_vocabulary is None:
      return (MK.PROBABILITY_MEAN_AT_CLASS % class_id, MK.AUC_AT_CLASS % class_id,
              MK.AUC_PR_AT_CLASS % class_id)
    name = self.label_vocabulary[class_id]
    return MK.PROBABILITY_MEAN_AT_NAME % name, MK.AUC_AT_NAME % name, MK.AUC_PR_AT_NAME % name

  def _batch_metrics(self, labels, predictions, unweighted_loss, weights) -> dict:
    probabilities = predictions[PK.PROBABILITIES]
    states = {
        MK.LOSS_MEAN: metrics.Mean.from_model_output(unweighted_loss, weights),
        MK.AUC: metrics.AUC.from_model_output(labels, probabilities, weights),
        MK.AUC_PR: metrics.AUC.from_model_output(labels, probabilities, weights, curve='PR'),
    }
    for t in self._thresholds:
      states[MK.ACCURACY_AT_THRESHOLD % t] = metrics.BinaryAccuracy.from_model_output(
          labels, probabilities, weights, threshold=t)
      states[MK.PRECISION_AT_THRESHOLD % t] = metrics.Precision.from_model_output(
          labels, probabilities, weights, threshold=t)
      states[MK.RECALL_AT_THRESHOLD % t] = metrics.Recall.from_model_output(
          labels, probabilities, weights, threshold=t)
    for class_id in self._class_ids:
      prob_key, auc_key, auc_pr_key = self._class_name(class_id)
      p = probabilities[..., class_id:class_id + 1]
      y = labels[..., class_id:class_id + 1]
      states[prob_key] = metrics.Mean.from_model_output(p, weights)
      states[auc_key] = metrics.AUC.from_model_output(y, p, weights)
      states[auc_pr_key] = metrics.AUC.from_model_output(y, p, weights, curve='PR')
    return states
