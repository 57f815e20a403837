"""The hook protocol: host-side callbacks around train, evaluate and predict.

Hooks are tf.estimator's SessionRunHook, reduced to what a compiled JAX loop
can honour without a per-step host sync. A hook sees the step number (a
Python int the host already knows) and the state as device arrays. It never
reads device values itself: it *asks* for them with `requests()`, and the
loop fetches what all hooks asked for together with its own log sync, on the
requested steps only, into `run_context.values` (numpy). A hook that asks
nothing costs nothing.

  class PrintLoss(je.hooks.Hook):
    def requests(self):
      return je.hooks.Request(['loss'], every_n_steps=50)

    def after_step(self, run_context):
      if run_context.values:                  # steps 50, 100, ...
        print(run_context.step, run_context.values['loss'])

Keys (`'*'` asks for all of them): in train `loss`, `global_step` and the
train metrics (aggregated since they were last fetched, by the log line or
any hook); in evaluate `loss`, `global_step` and the eval metrics so far
(running values); in predict any `predictions` key (this batch's rows).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence


@dataclasses.dataclass(frozen=True)
class Request:
  """Values a hook wants, and when: on steps that are multiples of `every_n_steps`,
  at most every `every_n_secs` seconds, and/or at the end (`at_end`, in `end`)."""

  keys: Sequence[str] = ()
  every_n_steps: int | None = None
  every_n_secs: float | None = None
  at_end: bool = False

  def __post_init__(self):
    if isinstance(self.keys, str):
      object.__setattr__(self, 'keys', (self.keys,))
    object.__setattr__(self, 'keys', tuple(self.keys))
    if self.every_n_steps is not None and self.every_n_secs is not None:
      raise ValueError('Request: give at most one of every_n_steps and every_n_secs.')
    if self.every_n_steps is not None and (not isinstance(self.every_n_steps, int)
                                           or self.every_n_steps <= 0):
      raise ValueError(f'Request: every_n_steps must be a positive int, got '
                       f'{self.every_n_steps!r}.')
    if self.every_n_secs is not None and self.every_n_secs < 0:
      raise ValueError(f'Request: every_n_secs must be >= 0, got {self.every_n_secs!r}.')


class RunContext:
  """What a hook sees.

  Attributes:
    estimator: the Estimator running.
    mode: 'train', 'eval' or 'infer'.
    step: the global step in train; the batch count in evaluate and predict.
    state: the train state (device pytree) in train; the variables otherwise.
      It is donated to the next step: read it inside the hook call, never keep it.
    values: what this hook requested, as numpy, on the steps it asked for;
      empty on the other steps.
    results: in evaluate's `end`, the evaluation results.
    examples_per_step: global batch size (train), for examples/sec.
  """

  def __init__(self, estimator: Any, step: int, state: Any = None, mode: str = 'train'):
    self.estimator = estimator
    self.mode = mode
    self.step = step
    self.state = state
    self.values: dict[str, Any] = {}
    self.results: dict[str, Any] | None = None
    self.examples_per_step: int | None = None
    self.stop_requested = False

  def request_stop(self) -> None:
    """Ends training after the current step (a checkpoint is still written); ends an
    evaluation or prediction after the current batch."""
    self.stop_requested = True


class Hook:
  """Base class; override what you need. Every method is called on every process."""

  def begin(self, run_context: RunContext) -> None:
    """Called once before the first step, after the state is created or restored."""

  def after_restore(self, run_context: RunContext) -> None:
    """Called right after `begin` with the state in place (tf's after_create_session)."""

  def requests(self) -> Request | None:
    """The values this hook wants in `run_context.values` (called once, at begin)."""
    return None

  def after_step(self, run_context: RunContext) -> None:
    """Called after every dispatch (the device may still be running it)."""

  def before_save(self, run_context: RunContext) -> None:
    """Called before a checkpoint of `run_context.step` is written (train only)."""

  def after_save(self, run_context: RunContext) -> None:
    """Called after that checkpoint's save started (it is on disk by `end`)."""

  def end(self, run_context: RunContext) -> None:
    """Called once after the last step (train: before the final checkpoint is saved)."""


class CheckpointSaverListener:
  """tf.estimator's listener around checkpoint saves: `train(saving_listeners=[...])`.

  `before_save` / `after_save` get the RunContext (`run_context.step` is the
  step saved). Returning True from `after_save` requests a stop, as in TF.
  """

  def begin(self) -> None:
    pass

  def before_save(self, run_context: RunContext) -> None:
    pass

  def after_save(self, run_context: RunContext) -> bool | None:
    pass

  def end(self, run_context: RunContext) -> None:
    pass


class StopAtStepHook(Hook):
  """Requests a stop after `num_steps` more steps or at global step `last_step`."""

  def __init__(self, num_steps: int | None = None, last_step: int | None = None):
    if (num_steps is None) == (last_step is None):
      raise ValueError('StopAtStepHook: give exactly one of num_steps and last_step.')
    self._num_steps, self._last_step = num_steps, last_step

  def begin(self, run_context: RunContext) -> None:
    if self._last_step is None:
      self._last_step = run_context.step + self._num_steps

  def after_step(self, run_context: RunContext) -> None:
    if run_context.step >= self._last_step:
      run_context.request_stop()
