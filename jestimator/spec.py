"""`ModeKeys` and `EstimatorSpec`: what a model_fn returns, as in tf.estimator.

`EstimatorSpec` is a pytree so a compiled step can return it: `predictions`,
`loss` and `eval_metrics` are its array leaves; `mode` and `optimizer` (an optax
GradientTransformation, the JAX counterpart of tf.estimator's `train_op`) are
static. The constructor checks what each mode needs, so a model_fn that forgets
its loss fails at trace time with a message, not deep inside the runner.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax


class ModeKeys:
  """The three modes a model_fn is called in (tf.estimator's string values)."""

  TRAIN = 'train'
  EVAL = 'eval'
  PREDICT = 'infer'

  ALL = (TRAIN, EVAL, PREDICT)


class _Static:
  """Holds static aux data compared by identity (export outputs may hold arrays)."""

  def __init__(self, value):
    self.value = value

  def __eq__(self, other):
    return isinstance(other, _Static) and other.value is self.value

  def __hash__(self):
    return id(self.value)


@jax.tree_util.register_pytree_node_class
class EstimatorSpec:
  """What a model_fn returns for one mode.

  Args:
    mode: one of `ModeKeys`.
    predictions: an array `[batch, ...]` or a dict of them; required in PREDICT.
    loss: a scalar (shape `()` or `(1,)`); required in TRAIN and EVAL.
    optimizer: an `optax.GradientTransformation`; required in TRAIN.
    eval_metrics: dict name -> metric state (see `jestimator.metrics`),
      accumulated over the evaluation batches; `loss` and `global_step` are
      reserved names.
    training_hooks, evaluation_hooks, prediction_hooks: `je.hooks.Hook`s run
      by train / evaluate / predict besides the call's own (read once per
      Estimator and mode, from the first trace of model_fn).
    export_outputs: dict signature name -> `je.export` output, for
      SavedModel export (static).
  """

  def __init__(
      self,
      mode: str,
      predictions: Any = None,
      loss: Any = None,
      optimizer: optax.GradientTransformation | None = None,
      eval_metrics: Mapping[str, Any] | None = None,
      training_hooks: Sequence[Any] = (),
      evaluation_hooks: Sequence[Any] = (),
      prediction_hooks: Sequence[Any] = (),
      export_outputs: Mapping[str, Any] | None = None,
  ):
    if mode not in ModeKeys.ALL:
      raise ValueError(f'EstimatorSpec: mode must be one of {ModeKeys.ALL}, got {mode!r}.')
    if mode in (ModeKeys.TRAIN, ModeKeys.EVAL) and loss is None:
      raise ValueError(f'EstimatorSpec: mode={mode!r} requires a loss; got loss=None.')
    if mode == ModeKeys.TRAIN and optimizer is None:
      raise ValueError(
          "EstimatorSpec: mode='train' requires an optimizer (an optax GradientTransformation).")
    if mode == ModeKeys.PREDICT and predictions is None:
      raise ValueError("EstimatorSpec: mode='infer' requires predictions; got None.")
    if optimizer is not None and not (hasattr(optimizer, 'init') and hasattr(optimizer, 'update')):
      raise TypeError(
          'EstimatorSpec: optimizer must be an optax GradientTransformation, got '
          f'{type(optimizer).__name__}.')
    if loss is not None:
      shape = jnp.shape(loss)
      if shape not in ((), (1,)):
        raise ValueError(f'EstimatorSpec: loss must be a scalar, got shape {shape}.')
      loss = jnp.reshape(loss, ())
    eval_metrics = dict(eval_metrics or {})
    for reserved in ('loss', 'global_step'):
      if reserved in eval_metrics:
        raise ValueError(f'EstimatorSpec: eval_metrics may not use the reserved name {reserved!r}.')
    for name, metric in eval_metrics.items():
      if not (hasattr(metric, 'merge') and hasattr(metric, 'compute')):
        raise TypeError(f'EstimatorSpec: eval_metrics[{name!r}] must be a metric state (e.g. '
                        f'je.metrics.Mean.from_model_output(...)), got {type(metric).__name__}.')
    self.mode = mode
    self.training_hooks = tuple(training_hooks or ())
    self.evaluation_hooks = tuple(evaluation_hooks or ())
    self.prediction_hooks = tuple(prediction_hooks or ())
    self.export_outputs = export_outputs
    self.predictions = predictions
    self.loss = loss
    self.optimizer = optimizer
    self.eval_metrics = eval_metrics

  def tree_flatten(self):
    return (self.predictions, self.loss, self.eval_metrics), (
        self.mode, self.optimizer, self.training_hooks, self.evaluation_hooks,
        self.prediction_hooks, _Static(self.export_outputs))

  @classmethod
  def tree_unflatten(cls, aux, children):
    spec = object.__new__(cls)
    (spec.mode, spec.optimizer, spec.training_hooks, spec.evaluation_hooks,
     spec.prediction_hooks, export_outputs) = aux
    spec.export_outputs = export_outputs.value
    spec.predictions, spec.loss, spec.eval_metrics = children
    return spec

  def __repr__(self):
    return (f'EstimatorSpec(mode={self.mode!r}, loss={self.loss!r}, '
            f'predictions={jax.tree.map(jnp.shape, self.predictions)}, '
            f'eval_metrics={sorted(self.eval_metrics)}, '
            f'optimizer={"set" if self.optimizer is not None else None})')
