"""The hook protocol: host-side callbacks around the training loop.

Hooks are tf.estimator's SessionRunHook, reduced to what a compiled JAX loop
can honour without a per-step host sync: they see the step number (a Python
int the host already knows) and the state as device arrays; reading an array
waits for the device, so a hook that does it every step slows training.
"""

from __future__ import annotations

from typing import Any


class RunContext:
  """What a hook sees: `step`, `state` (device pytree), and `request_stop()`.

  `state` is donated to the next step: read it inside the hook call (e.g.
  `jax.device_get`), never keep a reference to it for later.
  """

  def __init__(self, estimator: Any, step: int, state: Any = None):
    self.estimator = estimator
    self.step = step
    self.state = state
    self.stop_requested = False

  def request_stop(self) -> None:
    """Ends training after the current step (a checkpoint is still written)."""
    self.stop_requested = True


class Hook:
  """Base class; override any of `begin`, `after_step`, `end`."""

  def begin(self, run_context: RunContext) -> None:
    """Called once before the first step, after the state is created or restored."""

  def after_step(self, run_context: RunContext) -> None:
    """Called after every step is dispatched (the device may still be running it)."""

  def end(self, run_context: RunContext) -> None:
    """Called once after the last step, before the final checkpoint is awaited."""


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


def reject_hooks(hooks, method: str) -> None:
  """evaluate/predict take `hooks` for tf.estimator's signature but run none yet: say so."""
  if hooks:
    raise ValueError(f'{method}: hooks run in train only in this version; got {list(hooks)}.')
