"""The `Head` protocol and what every head shares (tf.estimator's `base_head`).

A head turns logits into a loss, predictions and metric states. Each head
supplies `logits_dimension`, `_processed_labels`, `_unweighted_loss`,
`predictions` and `_batch_metrics`; `Head` builds the public verbs from them:

  loss(labels, logits, features=None, mode=TRAIN)   -> float32 scalar
  predictions(logits, keys=None)                    -> {key: [batch, ...]}
  metrics(labels, logits, features=None)            -> {key: metric state}
  create_estimator_spec(features, mode, logits, labels=None, optimizer=None)

All of it is pure and traceable: build a head inside a model_fn and call it on
traced arrays. Shapes are static, so wrong shapes, a missing weight column or
unknown prediction keys raise `ValueError` at trace time. Label *values* are
checked as tf.estimator's heads check them: at once when they are concrete
(numpy or non-traced arrays); inside the Estimator's compiled steps as
deferred device checks (`jestimator.check`), raised as `InvalidInputError`
at the next log/save sync (the end of evaluate) with the head, the label and
the global step. Under a plain `jax.jit` an invalid label makes its
per-example loss NaN.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jestimator.export import outputs as export
from jestimator.heads import losses
from jestimator.heads.keys import MetricKeys, summary_key
from jestimator.metrics.mean import Mean
from jestimator.spec import EstimatorSpec, ModeKeys
from jestimator.training import checks


class Head:
  """Base class of heads; see the module docstring.

  Args:
    name: suffix of the metric keys (`accuracy/<name>`) and the key of this
      head in a `MultiHead`.
    weight_column: the feature holding per-example weights, `[batch]` or
      `[batch, 1]` (regression also `[batch, label_dimension]`).
    loss_reduction: `Reduction.SUM_OVER_BATCH_SIZE` (default) or `Reduction.SUM`.
    loss_fn: optional `loss_fn(labels, logits[, features])` returning the
      unreduced loss `[batch, loss_dim]`.
  """

  _allow_per_logit_weights = False

  def __init__(self, *, name: str | None, weight_column: str | None, loss_reduction: str,
               loss_fn=None):
    if name is not None and not isinstance(name, str):
      raise TypeError(f'{type(self).__name__}: name must be a str or None, got {name!r}.')
    if weight_column is not None and not isinstance(weight_column, str):
      raise TypeError(f'{type(self).__name__}: weight_column must be a feature name (str), '
                      f'got {weight_column!r}.')
    self._name = name
    self._weight_column = weight_column
    self._loss_reduction = losses.validate_loss_reduction(loss_reduction)
    self._loss_fn = losses.validate_loss_fn_args(loss_fn)

  # -- what subclasses provide ---------------------------------------------

  @property
  def logits_dimension(self) -> int:
    raise NotImplementedError

  def _processed_labels(self, logits: jax.Array, labels: Any) -> jax.Array:
    """Checked labels shaped like the loss needs them."""
    raise NotImplementedError

  def _unweighted_loss(self, labels: jax.Array, logits: jax.Array, features: Any) -> jax.Array:
    """Per-example loss `[batch, loss_dim]` from processed labels."""
    raise NotImplementedError

  def predictions(self, logits: jax.Array, keys: Sequence[str] | None = None) -> dict:
    raise NotImplementedError

  def _batch_metrics(self, labels, predictions, unweighted_loss, weights) -> dict:
    """Metric states of one batch under unsuffixed keys."""
    raise NotImplementedError

  # -- the public verbs ------------------------------------------------------

  @property
  def name(self) -> str | None:
    return self._name

  @property
  def loss_reduction(self) -> str:
    return self._loss_reduction

  def __repr__(self) -> str:
    return f'{type(self).__name__}(name={self._name!r}, logits_dimension={self.logits_dimension})'

  def _describe(self) -> str:
    return f'{type(self).__name__}' + (f' {self._name!r}' if self._name else '')

  def unweighted_loss_and_weights(self, labels: Any, logits: jax.Array,
                                  features: Mapping[str, Any] | None = None):
    """`(per-example loss [batch, loss_dim], weights [batch, 1|loss_dim] or None)`."""
    _, _, unweighted, weights = self._loss_inputs(labels, logits, features)
    return unweighted, weights

  def _loss_inputs(self, labels, logits, features):
    """(checked logits, processed labels, per-example loss, weights or None)."""
    logits = check_logits(logits, self.logits_dimension, self._describe())
    processed = self._processed_labels(logits, labels)
    weights = example_weights(features, self._weight_column, logits,
                              self._allow_per_logit_weights, self._describe())
    return logits, processed, self._unweighted_loss(processed, logits, features), weights

  def loss(self, labels: Any, logits: jax.Array, features: Mapping[str, Any] | None = None,
           mode: str = ModeKeys.TRAIN, regularization_losses: Sequence[Any] | None = None):
    """The reduced (scalar) training loss, regularization losses added.

    In evaluation the padding mask (`jestimator.example_mask()`) removes padded
    examples from the sum and from the SUM_OVER_BATCH_SIZE denominator.
    """
    del mode  # The loss is the same in every mode.
    unweighted, weights = self.unweighted_loss_and_weights(labels, logits, features)
    loss = losses.compute_weighted_loss(unweighted, weights, self._loss_reduction)
    return losses.add_regularization(loss, regularization_losses)

  def metrics(self, labels: Any, logits: jax.Array, features: Mapping[str, Any] | None = None,
              regularization_losses: Sequence[Any] | None = None) -> dict[str, Any]:
    """The metric states of one batch, keyed as tf.estimator keys its metrics.

    This is tf.estimator's `metrics()` + `update_metrics()` in one pure call:
    merge the returned states over batches (the Estimator does) and
    `compute()` them at the end.
    """
    logits, processed, unweighted, weights = self._loss_inputs(labels, logits, features)
    states = self._batch_metrics(processed, self.predictions(logits), unweighted, weights)
    if regularization_losses:
      states[MetricKeys.LOSS_REGULARIZATION] = batch_scalar_mean(
          losses.regularization_loss(regularization_losses))
    return {summary_key(k, self._name): v for k, v in states.items()}

  def export_outputs(self, predictions: dict) -> dict[str, export.ExportOutput]:
    """The SavedModel signatures of this head, from its `predictions` (all keys), as
    tf.estimator's head wrote them: here `serving_default` and `predict` serve every
    prediction; classification and regression heads add theirs."""
    output = export.PredictOutput(predictions)
    return {export.DEFAULT_SERVING_KEY: output, export.PREDICT_SERVING_KEY: output}

  def create_estimator_spec(self, features: Mapping[str, Any] | None, mode: str,
                            logits: jax.Array, labels: Any = None,
                            optimizer: optax.GradientTransformation | None = None,
                            regularization_losses: Sequence[Any] | None = None) -> EstimatorSpec:
    """The `EstimatorSpec` for `mode`: predictions always (with `export_outputs` in
    PREDICT); loss and the metric states in TRAIN/EVAL (TRAIN's are reported with the loss
    at each log step); `optimizer` is required in TRAIN."""
    predictions = self.predictions(logits)
    if mode == ModeKeys.PREDICT:
      return EstimatorSpec(mode, predictions=predictions,
                           export_outputs=self.export_outputs(predictions))
    if labels is None:
      raise ValueError(f'{self._describe()}: labels are required in mode {mode!r}, got None.')
    loss = self.loss(labels, logits, features, mode, regularization_losses)
    eval_metrics = self.metrics(labels, logits, features, regularization_losses)
    return EstimatorSpec(mode, predictions=predictions, loss=loss, optimizer=optimizer,
                         eval_metrics=eval_metrics)


def batch_scalar_mean(value: jax.Array) -> Mean:
  """A Mean that counts `value` once per batch (evaluate's `loss`), mask or not."""
  return Mean(total=jnp.reshape(jnp.asarray(value, jnp.float32), ()),
              count=jnp.ones((), jnp.float32))


def is_concrete(x: Any) -> bool:
  """Whether `x` holds values now (not a tracer), so they can be checked on the host."""
  return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def check_logits(logits: Any, logits_dimension: int, head: str) -> jax.Array:
  """`logits` as an array `[batch, ..., logits_dimension]`."""
  logits = jnp.asarray(logits)
  if logits.ndim < 2 or logits.shape[-1] != logits_dimension:
    raise ValueError(f'{head}: logits shape must be [D0, D1, ... DN, {logits_dimension}], '
                     f'got {logits.shape}.')
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f'{head}: logits must be floating point, got {logits.dtype}.')
  return logits


def dense_labels(labels: Any, logits: jax.Array, expected_dim: int, head: str) -> jax.Array:
  """Labels `[batch, ..., expected_dim]` matching the logits' leading dimensions.

  Labels with one dimension fewer than the logits get a trailing axis when
  `expected_dim` is 1 (`[batch]` -> `[batch, 1]`), as tf.estimator does.
  """
  if labels is None:
    raise ValueError(f'{head}: labels must not be None.')
  if isinstance(labels, Mapping):
    raise ValueError(f'{head}: labels must be an array, got a dict with keys {sorted(labels)}.')
  labels = jnp.asarray(labels)
  if expected_dim == 1 and labels.ndim == logits.ndim - 1:
    labels = labels[..., None]
  expected = tuple(logits.shape[:-1]) + (expected_dim,)
  if labels.shape != expected:
    raise ValueError(f'{head}: labels shape must be [D0, D1, ... DN, {expected_dim}] = '
                     f'{expected} to match logits {logits.shape}; got {labels.shape}.')
  return labels


def check_label_values(labels: jax.Array, valid: jax.Array, head: str, what: str) -> None:
  """Labels must be `valid` (`what` says how): a ValueError now when they are
  concrete, else a deferred device check (`jestimator.check`)."""
  if not is_concrete((labels, valid)):
    checks.check(valid, '{head}: invalid label {label}; labels must be {what}.', head=head,
                 label=labels, what=what)
    return
  bad = ~np.asarray(valid)
  if bad.any():
    index = tuple(int(i) for i in np.argwhere(bad)[0])
    value = np.asarray(labels)[index].item()
    raise ValueError(f'{head}: invalid label {value!r} at index {index}; labels must be {what}.')


def check_label_range(labels: jax.Array, n_classes: int, head: str,
                      message: str | None = None) -> None:
  """tf.estimator's `check_label_range`: labels `<= n_classes - 1`, then `>= 0` (its wording)."""
  check_label_values(labels, labels <= n_classes - 1, head,
                     message or f'<= n_classes - 1 (n_classes = {n_classes})')
  check_label_values(labels, labels >= 0, head, message or '>= 0')


def nan_where_invalid(loss: jax.Array, valid: jax.Array) -> jax.Array:
  """Per-example loss `[batch, d]`, NaN on rows with an invalid label (device check)."""
  row_ok = jnp.all(valid, axis=-1, keepdims=True)
  return jnp.where(row_ok, loss, jnp.nan)


def example_weights(features: Mapping[str, Any] | None, weight_column: str | None,
                    logits: jax.Array, allow_per_logit_weights: bool, head: str):
  """The weight column as float32 `[batch, 1]` (or `[batch, logits_dim]`), or None."""
  if weight_column is None:
    return None
  if not isinstance(features, Mapping) or weight_column not in features:
    keys = sorted(features) if isinstance(features, Mapping) else features
    raise ValueError(f'{head}: weight_column {weight_column!r} is not in features '
                     f'(features: {keys}).')
  weights = jnp.asarray(features[weight_column], jnp.float32)
  leading = tuple(logits.shape[:-1])
  if weights.shape == leading:
    weights = weights[..., None]
  allowed = [leading + (1,)]
  if allow_per_logit_weights:
    allowed.append(tuple(logits.shape))
  if weights.shape not in allowed:
    raise ValueError(f'{head}: weight_column {weight_column!r} must have shape '
                     f'{" or ".join(map(str, [leading] + allowed))}; got '
                     f'{jnp.shape(features[weight_column])}.')
  return weights


def check_prediction_keys(keys: Sequence[str] | None, valid: Sequence[str], head: str) -> list:
  """`keys` (all of `valid` when None), each checked against `valid`."""
  if keys is None:
    return list(valid)
  keys = [keys] if isinstance(keys, str) else list(keys)
  unknown = [k for k in keys if k not in valid]
  if unknown:
    raise ValueError(f'{head}: unknown prediction keys {unknown}; valid keys: {list(valid)}.')
  return keys


def check_thresholds(thresholds: Sequence[float] | None, head: str) -> tuple[float, ...]:
  """Thresholds for the `/positive_threshold_%g` metrics, each in (0, 1)."""
  thresholds = tuple(float(t) for t in (thresholds or ()))
  bad = [t for t in thresholds if not 0.0 < t < 1.0]
  if bad:
    raise ValueError(f'{head}: thresholds not in (0, 1): {bad}.')
  return thresholds
