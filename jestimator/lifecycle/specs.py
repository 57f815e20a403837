"""`TrainSpec` and `EvalSpec`: what `train_and_evaluate` and `run_evaluator` run.

tf.estimator's names, arguments and defaults, plus `every_n_steps` on
EvalSpec: evaluate on exact step boundaries (deterministic), instead of
tf.estimator's wall-clock throttle on checkpoint saves.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """How to train: `input_fn`, until global step `max_steps` (None: until the input
  ends or a hook stops), with `hooks` and `saving_listeners`."""

  input_fn: Callable
  max_steps: int | None = None
  hooks: Sequence[Any] = ()
  saving_listeners: Sequence[Any] = ()

  def __post_init__(self):
    if not callable(self.input_fn):
      raise TypeError(f'TrainSpec: input_fn must be callable, got {self.input_fn!r}.')
    if self.max_steps is not None and (not isinstance(self.max_steps, int)
                                       or self.max_steps <= 0):
      raise ValueError(f'TrainSpec: max_steps must be a positive int or None, got '
                       f'{self.max_steps!r}.')
    object.__setattr__(self, 'hooks', tuple(self.hooks or ()))
    object.__setattr__(self, 'saving_listeners', tuple(self.saving_listeners or ()))


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """How to evaluate.

  Attributes:
    input_fn: the evaluation input.
    steps: batches per evaluation (None: the whole input; tf.estimator's default 100).
    name: the evaluation's name: results and summaries go to `model_dir/eval_<name>`
      (`model_dir/eval` without a name).
    hooks: hooks run by each evaluation.
    exporters: `je.export` exporters called after each evaluation.
    start_delay_secs: no evaluation before this many seconds of training.
    throttle_secs: at least this many seconds between evaluations (each one on a
      fresh checkpoint).
    every_n_steps: evaluate at every multiple of this global step instead (and at
      the end); the time-based arguments are then ignored.
  """

  input_fn: Callable
  steps: int | None = 100
  name: str | None = None
  hooks: Sequence[Any] = ()
  exporters: Sequence[Any] | Any = ()
  start_delay_secs: float = 120
  throttle_secs: float = 600
  every_n_steps: int | None = None

  def __post_init__(self):
    if not callable(self.input_fn):
      raise TypeError(f'EvalSpec: input_fn must be callable, got {self.input_fn!r}.')
    if self.steps is not None and (not isinstance(self.steps, int) or self.steps <= 0):
      raise ValueError(f'EvalSpec: steps must be a positive int or None, got {self.steps!r}.')
    if self.every_n_steps is not None and (not isinstance(self.every_n_steps, int)
                                           or self.every_n_steps <= 0):
      raise ValueError(f'EvalSpec: every_n_steps must be a positive int or None, got '
                       f'{self.every_n_steps!r}.')
    for name in ('start_delay_secs', 'throttle_secs'):
      if getattr(self, name) < 0:
        raise ValueError(f'EvalSpec: {name} must be >= 0, got {getattr(self, name)!r}.')
    exporters = self.exporters
    if exporters is None:
      exporters = ()
    elif not isinstance(exporters, (list, tuple)):
      exporters = (exporters,)
    names = [e.name for e in exporters]
    if len(set(names)) != len(names):
      raise ValueError(f'EvalSpec: exporters must have distinct names, got {names}.')
    object.__setattr__(self, 'exporters', tuple(exporters))
    object.__setattr__(self, 'hooks', tuple(self.hooks or ()))

  @property
  def eval_dir_name(self) -> str:
    """'eval' or 'eval_<name>': the directory under model_dir for this evaluation."""
    return 'eval' if not self.name else f'eval_{self.name}'
