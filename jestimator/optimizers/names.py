"""tf.estimator's optimizer names -> optax, with Keras' defaults.

A canned estimator's `optimizer` may be an optax transformation, a callable
returning one, or one of tf.estimator's names, which get the estimator's
default learning rate (tf.estimator's `get_optimizer_instance_v2`):

  'Adagrad'  optax.adagrad(lr, initial_accumulator_value=0.1, eps=1e-7)
  'Adam'     optax.adam(lr, b1=0.9, b2=0.999, eps=1e-7)
  'Ftrl'     jestimator.optimizers.ftrl(lr)
  'RMSProp'  optax.rmsprop(lr, decay=0.9, eps=1e-7)
  'SGD'      optax.sgd(lr)

Default learning rates (tf.estimator 2.15): Linear 0.2, DNN 0.05, Baseline
0.3; DNNLinearCombined: dnn 0.001, linear min(0.005, 1/sqrt(#linear columns)).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import optax

from jestimator.optimizers.ftrl import ftrl

LINEAR_LEARNING_RATE = 0.2
DNN_LEARNING_RATE = 0.05
BASELINE_LEARNING_RATE = 0.3
COMBINED_DNN_LEARNING_RATE = 0.001
COMBINED_LINEAR_LEARNING_RATE = 0.005

OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
    'Adagrad': lambda lr: optax.adagrad(lr, initial_accumulator_value=0.1, eps=1e-7),
    'Adam': lambda lr: optax.adam(lr, b1=0.9, b2=0.999, eps=1e-7),
    'Ftrl': ftrl,
    'RMSProp': lambda lr: optax.rmsprop(lr, decay=0.9, eps=1e-7),
    'SGD': optax.sgd,
}


def combined_linear_learning_rate(num_linear_feature_columns: int) -> float:
  """DNNLinearCombined's linear default: min(0.005, 1/sqrt(#columns))."""
  return min(COMBINED_LINEAR_LEARNING_RATE, 1.0 / math.sqrt(num_linear_feature_columns))


def get_optimizer(optimizer: Any, learning_rate: float) -> optax.GradientTransformation:
  """An optax transformation from a name (with `learning_rate`), a transformation, or a
  zero-argument callable returning one."""
  if isinstance(optimizer, str):
    if optimizer not in OPTIMIZERS:
      raise ValueError(f'Unsupported optimizer name: {optimizer!r}. Supported names are: '
                       f'{tuple(sorted(OPTIMIZERS))}, or pass an optax GradientTransformation.')
    return OPTIMIZERS[optimizer](learning_rate)
  if isinstance(optimizer, optax.GradientTransformation):
    return optimizer
  if callable(optimizer):
    made = optimizer()
    if isinstance(made, optax.GradientTransformation):
      return made
    raise TypeError(f'the optimizer callable returned {made!r}, not an optax '
                    'GradientTransformation.')
  raise TypeError(f'optimizer must be a name {tuple(sorted(OPTIMIZERS))}, an optax '
                  f'GradientTransformation or a callable returning one; got {optimizer!r}.')
