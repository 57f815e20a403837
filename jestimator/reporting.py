"""What the host loop tells the user: log lines and progress bars.

Loss and speed go to the `jestimator` logger every `log_step_count_steps`
(reading the loss is the only device sync the train loop makes on its own);
`tqdm.auto` draws a bar when the total is known, a widget in Jupyter. With
many processes only process 0 logs and draws.
"""

from __future__ import annotations

import logging
import sys
import time

import jax
import numpy as np

from tqdm.auto import tqdm

logger = logging.getLogger('jestimator')


def log_to_stderr() -> None:
  """For command-line entry points: the `jestimator` logger's INFO lines on stderr, with
  a time stamp, whatever the root logger does."""
  handler = logging.StreamHandler()
  handler.setFormatter(logging.Formatter('%(asctime)s %(message)s', '%H:%M:%S'))
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False


class _UnlessConfigured(logging.StreamHandler):
  """Prints the `jestimator` logger's records to stderr (INFO and up) as long as nobody
  configured logging: no root handler, no other handler on this logger. absl does the
  same, so train/eval lines show in a terminal and a notebook without any setup; once
  the user calls `logging.basicConfig` (or adds a handler), theirs takes over."""

  def emit(self, record: logging.LogRecord) -> None:
    if logging.getLogger().handlers or any(h is not self for h in logger.handlers):
      return
    super().emit(record)


if not any(isinstance(h, _UnlessConfigured) for h in logger.handlers):
  _handler = _UnlessConfigured()  # stderr, looked up when each record is written
  _handler.setFormatter(logging.Formatter('%(levelname).1s %(asctime)s jestimator: %(message)s',
                                          '%H:%M:%S'))
  logger.addHandler(_handler)
  if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)


def _interactive() -> bool:
  """A terminal or a Jupyter kernel: where a bar is drawn in place, not as `\r` floods."""
  if 'ipykernel' in sys.modules:
    return True
  return bool(getattr(sys.stderr, 'isatty', lambda: False)())


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool | str):
  """A tqdm bar; `enabled='auto'` draws it only in a terminal or a notebook. Disabled
  without a total to show, and on processes other than 0."""
  if enabled == 'auto':
    enabled = _interactive()
  enabled = enabled and bool(total) and jax.process_index() == 0
  return tqdm(total=total, desc=desc, unit=unit, disable=not enabled,
              dynamic_ncols=True, leave=False)


class StepLogger:
  """Logs `loss`, the train metrics since the last log, steps/s and examples/s."""

  def __init__(self, every: int | None, start_step: int, examples_per_step: int):
    self.every = every
    self.examples_per_step = examples_per_step
    self._step, self._time = start_step, time.perf_counter()

  def due(self, step: int) -> bool:
    return bool(self.every) and step % self.every == 0

  def log(self, step: int, values: dict, metrics: dict | None = None) -> None:
    """`values`: numpy `loss` and metric values (fetched by the loop); `metrics`: the
    train metric names (only scalar ones are shown)."""
    if jax.process_index() != 0:
      return
    now = time.perf_counter()
    rate = (step - self._step) / max(now - self._time, 1e-9)
    shown = ''.join(f', {k} = {float(values[k]):.6g}' for k in sorted(metrics or ())
                    if k in values and np.ndim(values[k]) == 0)
    logger.info('step %d: loss = %.6g%s (%.1f steps/s, %.0f examples/s)', step,
                float(values['loss']), shown, rate, rate * self.examples_per_step)
    self._step, self._time = step, now
