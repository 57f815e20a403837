"""Calling a user's input_fn with the arguments it names (as tf.estimator does)."""

from __future__ import annotations

import inspect
from typing import Any, Callable

_OPTIONAL = ('params', 'mode', 'config', 'input_context')


def call_input_fn(input_fn: Callable, *, mode: str, params: Any, config: Any,
                  input_context: Any) -> Any:
  """Calls `input_fn`, passing `params`, `mode`, `config`, `input_context` if named."""
  if not callable(input_fn):
    raise TypeError(f'input_fn must be callable, got {type(input_fn).__name__}.')
  try:
    names = inspect.signature(input_fn).parameters
  except (TypeError, ValueError):
    names = {}
  available = dict(params=params, mode=mode, config=config, input_context=input_context)
  kwargs = {n: available[n] for n in _OPTIONAL if n in names}
  required = [n for n, p in names.items() if p.default is inspect.Parameter.empty
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in kwargs]
  if required:
    raise ValueError(f'input_fn has required arguments {required}; it may only take '
                     f'{_OPTIONAL}.')
  return input_fn(**kwargs)
