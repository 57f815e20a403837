"""Turning a user's `model_fn` into a Flax module: the Haiku-`transform` trick.

`model_fn(features, labels, mode, params, config)` builds Flax layers inline
(`nn.Dense(10)(x)`). Run inside the `nn.compact` `__call__` of `ModelFnModule`,
every module it constructs becomes a child of that implicit root, so the same
function gives `init` (create variables) and `apply` (use them) for all modes,
and a user's own `nn.Module` subclasses work unchanged.
"""

from __future__ import annotations

import contextvars
import inspect
from typing import Any, Callable

import flax.linen as nn

from jestimator.spec import EstimatorSpec, ModeKeys

_KNOWN_ARGS = ('features', 'labels', 'mode', 'params', 'config')
_MODE: contextvars.ContextVar[str | None] = contextvars.ContextVar('jestimator_mode',
                                                                  default=None)


def current_mode() -> str | None:
  """The `mode` of the model_fn call in progress (for layers that follow it, e.g.
  `je.nnx_model`); None outside a model_fn call."""
  return _MODE.get()


def model_fn_args(model_fn: Callable) -> tuple[str, ...]:
  """The argument names of `model_fn`; checks it takes `features` and nothing unknown."""
  try:
    names = tuple(inspect.signature(model_fn).parameters)
  except (TypeError, ValueError) as e:
    raise TypeError(f'model_fn must be a function, got {model_fn!r}.') from e
  if 'features' not in names:
    raise ValueError(f'model_fn {getattr(model_fn, "__name__", model_fn)} must take an argument '
                     f'named "features"; its arguments are {names}.')
  unknown = [n for n in names if n not in _KNOWN_ARGS and n != 'self']
  if unknown:
    raise ValueError(f'model_fn has unknown arguments {unknown}; allowed: {_KNOWN_ARGS}.')
  return names


def call_model_fn(model_fn: Callable, features: Any, labels: Any, mode: str,
                  params: Any, config: Any) -> EstimatorSpec:
  """Calls `model_fn` passing only the arguments it names; checks what it returns."""
  names = model_fn_args(model_fn)
  if labels is not None and 'labels' not in names and mode != ModeKeys.PREDICT:
    raise ValueError('model_fn does not take "labels", but the input_fn returned labels.')
  available = dict(features=features, labels=labels, mode=mode, params=params, config=config)
  token = _MODE.set(mode)
  try:
    spec = model_fn(**{n: available[n] for n in names if n in available})
  finally:
    _MODE.reset(token)
  if not isinstance(spec, EstimatorSpec):
    raise TypeError(
        f'model_fn must return an EstimatorSpec, got {type(spec).__name__} (mode={mode!r}).')
  if spec.mode != mode:
    raise ValueError(f'model_fn was called with mode={mode!r} but returned a spec for '
                     f'mode={spec.mode!r}.')
  return spec


class ModelFnModule(nn.Module):
  """The implicit root module whose body is the user's model_fn.

  `apply(variables, features, labels, mode)` returns the `EstimatorSpec`.
  """

  model_fn: Callable
  hparams: Any = None
  config: Any = None

  @nn.compact
  def __call__(self, features, labels, mode: str) -> EstimatorSpec:
    return call_model_fn(self.model_fn, features, labels, mode, self.hparams, self.config)
