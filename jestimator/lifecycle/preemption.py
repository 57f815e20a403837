"""Preemption: SIGTERM (and Ctrl-C in a script) ends `train()` with a checkpoint.

Cluster schedulers send SIGTERM some seconds before they kill a job. While
`train()` runs, `PreemptionGuard` turns that signal into a stop request: the
loop finishes the step in flight, saves a checkpoint at the current step and
returns normally with a log line, so the next run resumes exactly there
(input position included). In a script, SIGINT (Ctrl-C) does the same; a
second Ctrl-C interrupts at once. In a notebook, Ctrl-C ("interrupt the
kernel") keeps its usual meaning.

With several processes the processes must agree on the step: JAX's
preemption sync point (`multihost_utils.reached_preemption_sync_point`,
served by the coordination service that `jax.distributed.initialize` starts)
returns True on every process at the same step once any of them got the
signal. The previous handlers are restored when `train()` returns.
"""

from __future__ import annotations

import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils


class PreemptionGuard:
  """Context manager: `requested(step)` says whether to stop and save at `step`."""

  def __init__(self):
    self._signal = None
    self._previous: dict = {}
    self._multi = jax.process_count() > 1

  def _handle(self, signum, frame):
    del frame
    if self._signal == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now
    self._signal = signum

  def __enter__(self) -> 'PreemptionGuard':
    if self._multi or threading.current_thread() is not threading.main_thread():
      return self  # JAX's preemption service listens; handlers need the main thread
    signals = [signal.SIGTERM]
    if 'ipykernel' not in sys.modules:
      signals.append(signal.SIGINT)
    for signum in signals:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  @property
  def signal_name(self) -> str | None:
    return None if self._signal is None else signal.Signals(self._signal).name

  def requested(self, step: int) -> bool:
    """True at the step where every process stops (a local flag with one process)."""
    if self._multi:
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # no preemption service (not started by jax.distributed)
        return False
    return self._signal is not None
