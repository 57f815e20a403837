"""`MultiHead`: several named heads on one model, for multi-task learning."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from jestimator.export import outputs as export
from jestimator.heads import base, losses
from jestimator.heads.keys import MetricKeys
from jestimator.spec import EstimatorSpec, ModeKeys


class MultiHead:
  """Combines named heads (tf.estimator.MultiHead).

  - logits: a dict `{head name: [batch, head.logits_dimension]}`, or one array
    `[batch, sum of logits dimensions]` split on the last axis in head order;
  - labels: a dict `{head name: labels}`;
  - loss: `sum_i head_weights[i] * head_i.loss` (each head reduces its own);
  - predictions: `{'<head name>/<key>': ...}`;
  - metrics: every head's metrics (keys already end in `/<head name>`), plus
    `loss/<head name>`, the head's reduced loss counted once per batch (like
    evaluate's `loss`, so it depends on how the data is batched).

  Args:
    heads: heads with distinct, non-empty names.
    head_weights: optional floats, one per head, for the loss.
  """

  def __init__(self, heads: Sequence[base.Head], head_weights: Sequence[float] | None = None):
    heads = tuple(heads)
    if not heads:
      raise ValueError('MultiHead: must specify heads. Given: [].')
    names = []
    for head in heads:
      if not isinstance(head, base.Head):
        raise TypeError(f'MultiHead: heads must be Head objects, got {type(head).__name__}.')
      if not head.name:
        raise ValueError(f'MultiHead: all heads must have a name. Given: {head!r}.')
      names.append(head.name)
    if len(set(names)) != len(names):
      raise ValueError(f'MultiHead: head names must be unique. Given: {names}.')
    if head_weights is not None:
      head_weights = tuple(float(w) for w in head_weights)
      if len(head_weights) != len(heads):
        raise ValueError(f'MultiHead: heads and head_weights must have the same size. Given '
                         f'len(heads): {len(heads)}. Given len(head_weights): '
                         f'{len(head_weights)}.')
    self._heads = heads
    self._head_weights = head_weights

  @property
  def heads(self) -> tuple[base.Head, ...]:
    return self._heads

  @property
  def name(self) -> None:
    return None

  @property
  def logits_dimension(self) -> int:
    return sum(h.logits_dimension for h in self._heads)

  def __repr__(self) -> str:
    return f'MultiHead(heads={list(self._heads)!r}, head_weights={self._head_weights})'

  def _split_logits(self, logits: Any) -> dict[str, jax.Array]:
    names = [h.name for h in self._heads]
    if isinstance(logits, Mapping):
      missing = [n for n in names if n not in logits]
      if missing:
        raise ValueError(f'MultiHead: logits has missing values for head(s): {missing} '
                         f'(logits keys: {sorted(logits)}).')
      return {n: logits[n] for n in names}
    logits = jnp.asarray(logits)
    if logits.ndim < 2 or logits.shape[-1] != self.logits_dimension:
      raise ValueError(f'MultiHead: logits shape must be [D0, ... DN, {self.logits_dimension}] '
                       f'(the sum of the heads\' logits dimensions); got {logits.shape}.')
    out, start = {}, 0
    for head in self._heads:
      out[head.name] = logits[..., start:start + head.logits_dimension]
      start += head.logits_dimension
    return out

  def _labels_of(self, labels: Any) -> dict[str, Any]:
    if not isinstance(labels, Mapping):
      raise ValueError(f'MultiHead: labels must be a dict keyed by head name. Given: '
                       f'{type(labels).__name__}.')
    missing = [h.name for h in self._heads if h.name not in labels]
    if missing:
      raise ValueError(f'MultiHead: labels has missing values for head(s): {missing} (labels '
                       f'keys: {sorted(labels)}).')
    return labels

  def _head_losses(self, labels, logits, features, mode) -> list[jax.Array]:
    logits, labels = self._split_logits(logits), self._labels_of(labels)
    return [h.loss(labels[h.name], logits[h.name], features, mode) for h in self._heads]

  def _merge(self, head_losses: Sequence[jax.Array]) -> jax.Array:
    if self._head_weights is not None:
      head_losses = [loss * w for loss, w in zip(head_losses, self._head_weights)]
    return sum(head_losses[1:], head_losses[0])

  def loss(self, labels: Mapping[str, Any], logits: Any,
           features: Mapping[str, Any] | None = None, mode: str = ModeKeys.TRAIN,
           regularization_losses: Sequence[Any] | None = None) -> jax.Array:
    """`sum_i head_weights[i] * heads[i].loss(...)`, plus regularization losses."""
    merged = self._merge(self._head_losses(labels, logits, features, mode))
    return losses.add_regularization(merged, regularization_losses)

  def predictions(self, logits: Any, keys: Sequence[str] | None = None) -> dict:
    """`{'<head name>/<key>': ...}`; `keys` selects among those full keys."""
    logits = self._split_logits(logits)
    out = {}
    for head in self._heads:
      for key, value in head.predictions(logits[head.name]).items():
        out[f'{head.name}/{key}'] = value
    return {k: out[k] for k in base.check_prediction_keys(keys, list(out), 'MultiHead')}

  def export_outputs(self, predictions: dict) -> dict[str, export.ExportOutput]:
    """tf.estimator's MultiHead signatures: `serving_default` is the first head's default;
    each head's outputs under `<name>` (its default) and `<name>/<key>`; `predict` serves
    every head's predictions (`<name>/<key>`)."""
    out, merged, default = {}, {}, None
    for head in self._heads:
      prefix = f'{head.name}/'
      own = {k[len(prefix):]: v for k, v in predictions.items() if k.startswith(prefix)}
      outputs = head.export_outputs(own)
      if default is None:
        default = export.serving_outputs(outputs, own)[export.DEFAULT_SERVING_KEY]
      for key, output in outputs.items():
        out[head.name if key == export.DEFAULT_SERVING_KEY else f'{head.name}/{key}'] = output
        if key == export.PREDICT_SERVING_KEY and isinstance(output, export.PredictOutput):
          merged.update({f'{prefix}{k}': v for k, v in output.outputs.items()})
    out = {export.DEFAULT_SERVING_KEY: default, **out}
    out[export.PREDICT_SERVING_KEY] = export.PredictOutput(merged)
    return out

  def metrics(self, labels: Mapping[str, Any], logits: Any,
              features: Mapping[str, Any] | None = None,
              regularization_losses: Sequence[Any] | None = None) -> dict[str, Any]:
    """Every head's metric states, plus `loss/<name>` per head, for one batch."""
    split, labels = self._split_logits(logits), self._labels_of(labels)
    head_losses = self._head_losses(labels, split, features, ModeKeys.EVAL)
    states = {}
    for head, head_loss in zip(self._heads, head_losses):
      states[f'{MetricKeys.LOSS}/{head.name}'] = base.batch_scalar_mean(head_loss)
      states.update(head.metrics(labels[head.name], split[head.name], features))
    if regularization_losses:
      states[MetricKeys.LOSS_REGULARIZATION] = base.batch_scalar_mean(
          losses.regularization_loss(regularization_losses))
    return states

  def create_estimator_spec(self, features: Mapping[str, Any] | None, mode: str, logits: Any,
                            labels: Mapping[str, Any] | None = None,
                            optimizer: optax.GradientTransformation | None = None,
                            regularization_losses: Sequence[Any] | None = None) -> EstimatorSpec:
    """The `EstimatorSpec` for `mode`, as `Head.create_estimator_spec`."""
    predictions = self.predictions(logits)
    if mode == ModeKeys.PREDICT:
      return EstimatorSpec(mode, predictions=predictions,
                           export_outputs=self.export_outputs(predictions))
    if labels is None:
      raise ValueError(f'MultiHead: labels are required in mode {mode!r}, got None.')
    loss = self.loss(labels, logits, features, mode, regularization_losses)
    eval_metrics = None
    if mode == ModeKeys.EVAL:
      eval_metrics = self.metrics(labels, logits, features, regularization_losses)
    return EstimatorSpec(mode, predictions=predictions, loss=loss, optimizer=optimizer,
                         eval_metrics=eval_metrics)
