"""tf.estimator's stock hooks (`tf.train.LoggingTensorHook` & co.) on the request protocol.

Same names, arguments and log lines as TensorFlow's `basic_session_run_hooks`,
but a hook never reads the device itself: it states in `requests()` which
values it wants and when, and the loop fetches them with its own log sync
(see `base.py`). A "tensor" here is a key of the mode's values: `loss`,
`global_step` or a metric name in train and evaluate, a prediction key in
predict. A step is the loop's (the global step in train, the batch count in
evaluate and predict), so `every_n_iter=N` fires on multiples of N.

  est.train(input_fn, max_steps=1000, hooks=[
      je.hooks.LoggingTensorHook(['loss', 'accuracy'], every_n_iter=100),
      je.hooks.StepCounterHook(every_n_steps=100, output_dir=est.model_dir),
      je.hooks.ProfilerHook(start_step=200, num_steps=5)])

Lines go to the `jestimator` logger, on process 0 only (the values are
global, so every process would print the same line).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from jestimator.hooks.base import Hook, Request, RunContext

logger = logging.getLogger('jestimator')
_now = time.perf_counter  # the host clock (tests replace it)


def _is_chief() -> bool:
  return jax.process_index() == 0


class _SecondOrStepTimer:
  """tf.train.SecondOrStepTimer on the host clock: fires when a multiple of `every_steps`
  was reached since the last firing, or `every_secs` have passed. The first call fires
  (it sets the baseline, as in TF)."""

  def __init__(self, every_secs: float | None = None, every_steps: int | None = None):
    if every_secs is None and every_steps is None:
      raise ValueError('Either every_secs or every_steps should be provided.')
    if every_secs is not None and every_steps is not None:
      raise ValueError('Can not provide both every_secs and every_steps.')
    self._every_secs, self._every_steps = every_secs, every_steps
    self.reset()

  def reset(self) -> None:
    self._last_step: int | None = None
    self._last_time: float | None = None

  def should_trigger_for_step(self, step: int) -> bool:
    if self._last_step is None:
      return True
    if step == self._last_step:
      return False
    if self._every_secs is not None:
      return _now() >= self._last_time + self._every_secs
    return step // self._every_steps > self._last_step // self._every_steps

  def update_last_triggered_step(self, step: int) -> tuple[float | None, int | None]:
    """Records a firing at `step`; (seconds, steps) since the previous one, None at first."""
    now = _now()
    elapsed = (None, None) if self._last_step is None else (now - self._last_time,
                                                            step - self._last_step)
    self._last_step, self._last_time = step, now
    return elapsed


class LoggingTensorHook(Hook):
  """Logs the given values every N steps, every N seconds, and/or at the end.

  Args:
    tensors: keys (`['loss', 'accuracy']`) or a dict tag -> key; a dict is
      logged in sorted tag order, a list in its own order.
    every_n_iter: log on global steps that are multiples of N.
    every_n_secs: log at most once every N seconds.
    at_end: also log the values at the end of the run.
    formatter: dict tag -> numpy value -> the string to log; default
      `tag = value, ...` followed by `(x.xxx sec)` since the previous line.

  Exactly one of every_n_iter and every_n_secs, unless at_end only (TF's rule).
  """

  def __init__(self, tensors: Sequence[str] | Mapping[str, str], every_n_iter: int | None = None,
               every_n_secs: float | None = None, at_end: bool = False,
               formatter: Callable[[dict], str] | None = None):
    only_log_at_end = at_end and every_n_iter is None and every_n_secs is None
    if not only_log_at_end and (every_n_iter is None) == (every_n_secs is None):
      raise ValueError('either at_end and/or exactly one of every_n_iter and every_n_secs '
                       'must be provided.')
    if every_n_iter is not None and every_n_iter <= 0:
      raise ValueError(f'invalid every_n_iter={every_n_iter}.')
    if isinstance(tensors, str):
      tensors = [tensors]
    if isinstance(tensors, Mapping):
      self._tag_order = sorted(tensors)
      self._tensors = dict(tensors)
    else:
      self._tag_order = list(tensors)
      self._tensors = {key: key for key in tensors}
    self._request = Request(list(dict.fromkeys(self._tensors.values())),
                            every_n_steps=every_n_iter, every_n_secs=every_n_secs,
                            at_end=at_end)
    self._formatter = formatter
    self._last_time: float | None = None

  def requests(self) -> Request:
    return self._request

  def begin(self, run_context: RunContext) -> None:
    self._last_time = None

  def _log(self, values: dict) -> None:
    now = _now()
    elapsed, self._last_time = (None if self._last_time is None else now - self._last_time), now
    if not _is_chief():
      return
    tagged = {tag: values[self._tensors[tag]] for tag in self._tag_order}
    with np.printoptions(suppress=True):
      if self._formatter:
        logger.info(self._formatter(tagged))
        return
      stats = ', '.join(f'{tag} = {value!s}' for tag, value in tagged.items())
    if elapsed is None:
      logger.info('%s', stats)
    else:
      logger.info('%s (%.3f sec)', stats, elapsed)

  def after_step(self, run_context: RunContext) -> None:
    if run_context.values:
      self._log(run_context.values)

  def end(self, run_context: RunContext) -> None:
    if self._request.at_end and run_context.values:
      self._log(run_context.values)


class StepCounterHook(Hook):
  """Logs (and with `output_dir` writes as a summary) the global steps per second.

  Measured on the host clock between two firings; it requests no values, so it
  adds no device sync. The host may run a few dispatches ahead of the device,
  so a short interval is noisy; with `every_n_steps` equal to the config's
  `log_step_count_steps` both ends fall on the loop's log sync and are exact.

  Args:
    every_n_steps: fire when the global step reaches a multiple of N.
    every_n_secs: fire at most every N seconds instead.
    output_dir: write the scalar `global_step/sec` there
      (`jestimator.summary.write_scalars`), from process 0.
    summary_writer: instead of output_dir, any object with
      `write_scalars(step, scalars)` (e.g. a `clu.metric_writers` writer).
  """

  def __init__(self, every_n_steps: int | None = 100, every_n_secs: float | None = None,
               output_dir: str | None = None, summary_writer: Any = None):
    if (every_n_steps is None) == (every_n_secs is None):
      raise ValueError('exactly one of every_n_steps and every_n_secs should be provided.')
    if summary_writer is not None and not callable(getattr(summary_writer, 'write_scalars',
                                                           None)):
      raise ValueError('StepCounterHook: summary_writer must have a write_scalars(step, '
                       f'scalars) method (e.g. a clu.metric_writers writer); got '
                       f'{type(summary_writer).__name__}. Or give output_dir.')
    self._timer = _SecondOrStepTimer(every_secs=every_n_secs, every_steps=every_n_steps)
    self._output_dir = output_dir
    self._summary_writer = summary_writer
    self._summary_tag = 'global_step/sec'

  def begin(self, run_context: RunContext) -> None:
    self._timer.reset()

  def after_step(self, run_context: RunContext) -> None:
    step = run_context.step
    if not self._timer.should_trigger_for_step(step):
      return
    elapsed_time, elapsed_steps = self._timer.update_last_triggered_step(step)
    if elapsed_time is not None:
      self._log_and_record(elapsed_steps / max(elapsed_time, 1e-9), step)

  def _log_and_record(self, steps_per_sec: float, step: int) -> None:
    if not _is_chief():
      return
    scalars = {self._summary_tag: steps_per_sec}
    if self._summary_writer is not None:
      self._summary_writer.write_scalars(step, scalars)
    elif self._output_dir:
      from jestimator import summary  # imported here: summary pulls in the TB writer
      summary.write_scalars(self._output_dir, step, scalars)
    logger.info('%s: %g', self._summary_tag, steps_per_sec)


class NanTensorHook(Hook):
  """Checks the loss every N steps; raises, or with `fail_on_nan_loss=False` warns and stops.

  The loop's device-side guard already catches a NaN or infinite loss at any
  step, at no cost (it raises NanLossDuringTrainingError at its next sync).
  This hook's use is its `fail_on_nan_loss`: with False the loop's guard too
  warns and stops instead of raising, and the checkpoint of the last good step
  is kept. `every_n_steps` is how often this hook itself reads the loss; unlike
  TF, that read is not every step.

  Args:
    loss_tensor: the key checked, default 'loss'.
    fail_on_nan_loss: raise `NanLossDuringTrainingError`, else warn and request a stop.
    every_n_steps: read the value on global steps that are multiples of N.
  """

  def __init__(self, loss_tensor: str = 'loss', fail_on_nan_loss: bool = True,
               every_n_steps: int = 100):
    self.loss_tensor = loss_tensor
    self.fail_on_nan_loss = fail_on_nan_loss
    self._request = Request([loss_tensor], every_n_steps=every_n_steps)

  def requests(self) -> Request:
    return self._request

  def after_step(self, run_context: RunContext) -> None:
    if not run_context.values:
      return
    loss = np.asarray(run_context.values[self.loss_tensor])
    if np.isfinite(loss).all():
      return
    message = f'Model diverged with loss = {loss} at global step {run_context.step}.'
    if self.fail_on_nan_loss:
      from jestimator.train_loop import NanLossDuringTrainingError  # train_loop imports hooks
      raise NanLossDuringTrainingError(f'NaN loss during training. {message}')
    logger.warning('%s Stopping.', message)
    run_context.request_stop()


class ProfilerHook(Hook):
  """Writes a `jax.profiler` trace of `num_steps` steps, for TensorBoard's profile tab or
  Perfetto (`<output_dir>/plugins/profile/<run>/<host>.xplane.pb`).

  One trace, of the steps after global step `start_step` up to
  `start_step + num_steps` (later if a multi-step dispatch jumps past it);
  TF's hook instead wrote one step's timeline every save_steps, which a JAX
  trace is too costly for. The state is waited on before the trace stops, so
  the traced steps are complete in it.

  Args:
    save_steps: start after this many steps of this run (default 10).
    save_secs: or start on the first step after this many seconds.
    output_dir: where the trace goes; default the estimator's model_dir.
    show_dataflow, show_memory: TF timeline options, accepted and ignored.
    start_step: the global step after which to start; overrides save_steps/secs.
    num_steps: how many steps to trace.
  """

  def __init__(self, save_steps: int | None = None, save_secs: float | None = None,
               output_dir: str = '', show_dataflow: bool = True, show_memory: bool = False,
               start_step: int | None = None, num_steps: int = 5):
    del show_dataflow, show_memory  # a JAX trace has no such options
    if save_steps is not None and save_secs is not None:
      raise ValueError('Can not provide both every_secs and every_steps.')
    if not isinstance(num_steps, int) or num_steps <= 0:
      raise ValueError(f'ProfilerHook: num_steps must be a positive int, got {num_steps!r}.')
    self._save_steps, self._save_secs = save_steps, save_secs
    self._output_dir, self._start_step, self._num_steps = output_dir, start_step, num_steps
    self._start: int | None = None
    self._started_at: float = 0.0
    self._tracing_since: int | None = None
    self._done = False
    self.trace_dir: str | None = None

  def begin(self, run_context: RunContext) -> None:
    self._done, self._tracing_since, self._started_at = False, None, _now()
    if self._start_step is not None:
      self._start = self._start_step
    elif self._save_secs is not None:
      self._start = None  # decided by the clock
    else:
      self._start = run_context.step + (self._save_steps or 10)
    self.trace_dir = self._output_dir or run_context.estimator.model_dir

  def _due(self, step: int) -> bool:
    if self._start is None:
      return _now() - self._started_at >= self._save_secs
    return step >= self._start

  def after_step(self, run_context: RunContext) -> None:
    step = run_context.step
    if self._tracing_since is not None:
      if step >= self._tracing_since + self._num_steps:
        self._stop(run_context)
    elif not self._done and self._due(step):
      jax.profiler.start_trace(self.trace_dir)
      self._tracing_since = step

  def end(self, run_context: RunContext) -> None:
    if self._tracing_since is not None:
      self._stop(run_context)

  def close(self) -> None:
    """Stops a trace still running when the loop ended with an error."""
    if self._tracing_since is not None:
      jax.profiler.stop_trace()
      self._tracing_since, self._done = None, True

  def _stop(self, run_context: RunContext) -> None:
    jax.block_until_ready(run_context.state)
    jax.profiler.stop_trace()
    logger.info('Saved a profile of global steps %d..%d under %s.', self._tracing_since + 1,
                run_context.step, os.path.join(self.trace_dir, 'plugins', 'profile'))
    self._tracing_since, self._done = None, True


class FinalOpsHook(Hook):
  """Fetches values at the end of a run: `final_ops_values` after train/evaluate/predict.

  Args:
    final_ops: a key, a list of keys, or a dict name -> key; `final_ops_values`
      is then a single value, a list, or a dict (numpy), as in TF. In evaluate
      they are the final metric values (equal to the results).
    final_ops_feed_dict: TF's feed dict; JAX has nothing to feed, so only None.
  """

  def __init__(self, final_ops: str | Sequence[str] | Mapping[str, str] | None,
               final_ops_feed_dict: Any = None):
    if final_ops_feed_dict is not None:
      raise ValueError('FinalOpsHook: final_ops_feed_dict is not supported (nothing is fed '
                       'in JAX); final_ops are keys of the values the loop produces.')
    self._final_ops = final_ops
    self._final_ops_values = None

  @property
  def final_ops_values(self) -> Any:
    return self._final_ops_values

  def _keys(self) -> list[str]:
    ops = self._final_ops
    if isinstance(ops, str):
      return [ops]
    return list(ops.values() if isinstance(ops, Mapping) else ops)

  def requests(self) -> Request | None:
    if self._final_ops is None:
      return None
    return Request(list(dict.fromkeys(self._keys())), at_end=True)

  def end(self, run_context: RunContext) -> None:
    values, ops = run_context.values, self._final_ops
    if ops is None or not values:
      return
    if isinstance(ops, str):
      self._final_ops_values = values[ops]
    elif isinstance(ops, Mapping):
      self._final_ops_values = {name: values[key] for name, key in ops.items()}
    else:
      self._final_ops_values = [values[key] for key in ops]


__all__ = ['FinalOpsHook', 'LoggingTensorHook', 'NanTensorHook', 'ProfilerHook',
           'StepCounterHook']
