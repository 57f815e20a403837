"""The training loop: the host side of `Estimator.train`.

A `Feeder` thread prepares the inputs (pull, numpy, signature check,
placement on the mesh) while this loop dispatches the compiled train step
(or `steps_per_loop` steps at once) without waiting on the device, except to
log (every `log_step_count_steps`), to save, and to keep at most
`MAX_INFLIGHT_STEPS` dispatches queued. Checkpoint cadence, hooks, the NaN
guard and the progress bar live here; the math lives in `training/steps.py`.
The device checks (`training/checks.py`: invalid labels and ids, user
`je.check`s, a non-finite loss) are read at log steps and before every save.

Saves happen only at *pause points*: steps that are multiples of
`save_checkpoints_steps`, or, with time-based saving, of the log cadence (100
if logging is off), where the feeder waits so the saved input position is
exact; and at the end, after the feeder's read-ahead is handed back to the
input.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jestimator.checkpoint import CheckpointStore
from jestimator.config import RunConfig
from jestimator.hooks.base import Hook, RunContext
from jestimator.inputs.feeder import background_pays, make_feeder
from jestimator.inputs.padding import batch_size_of
from jestimator.inputs.pipeline import Chunk, InputPipeline
from jestimator.inputs.signature import Signature
from jestimator.lifecycle.preemption import PreemptionGuard
from jestimator.reporting import StepLogger, logger, progress_bar
from jestimator.training import checks
from jestimator.training.runner import Runner, shardings_of
from jestimator.training.steps import NAN_LOSS
from jestimator.training.train_state import TrainState

# Steps the host may run ahead of the device. Bounding it caps memory and
# avoids an XLA:CPU collective deadlock seen with many in-flight multi-device
# steps (8 virtual devices on 2 cores); waiting on step s-4 never idles the device.
MAX_INFLIGHT_STEPS = 4
_SYNC_EVERY = 100  # pause points for time-based saves when logging is off


class NanLossDuringTrainingError(RuntimeError):
  """The training loss became NaN or infinite."""


def check_train_args(steps, max_steps, hooks) -> list[Hook]:
  """Validates `train()`'s arguments (tf.estimator's rules and wording); the hooks as a list."""
  if steps is not None and max_steps is not None:
    raise ValueError('Can not provide both steps and max_steps.')
  for name, value in (('steps', steps), ('max_steps', max_steps)):
    if value is not None and (not isinstance(value, (int, np.integer)) or
                              isinstance(value, bool)):
      raise TypeError(f'{name} must be an int, given: {value!r}.')
    if value is not None and value <= 0:
      raise ValueError(f'Must specify {name} > 0, given: {value}')
  hooks = list(hooks or [])
  for hook in hooks:
    if not all(callable(getattr(hook, m, None)) for m in ('begin', 'after_step', 'end')):
      raise TypeError(f'hooks must be je.hooks.Hook instances (begin / after_step / end); '
                      f'got {type(hook).__name__}: {hook!r}.')
  return hooks


def _pause_every(config: RunConfig) -> tuple[int, ...]:
  """Cadences of the steps where a checkpoint may be saved."""
  if config.save_checkpoints_steps:
    return (config.save_checkpoints_steps,)
  if config.save_checkpoints_secs is not None:
    return (config.log_step_count_steps or _SYNC_EVERY,)
  return ()


def _chunk(step: int, config: RunConfig, last: int | None) -> int:
  """Steps in the next dispatch: steps_per_loop, cut at the next log/pause step and `last`."""
  n = config.steps_per_loop
  for every in (config.log_step_count_steps, *_pause_every(config)):
    if every:
      n = min(n, every - step % every)
  return n if last is None else min(n, last - step)


def _secs_due_fn(config: RunConfig):
  """Whether a time-based save is due at a pause point. Saving is collective, so
  with several processes process 0's clock decides (one tiny broadcast)."""
  secs = config.save_checkpoints_secs
  if secs is None:
    return lambda saved_time: False
  if jax.process_count() == 1:
    return lambda saved_time: time.monotonic() - saved_time >= secs
  return lambda saved_time: bool(multihost_utils.broadcast_one_to_all(
      np.bool_(time.monotonic() - saved_time >= secs)))


@dataclasses.dataclass
class _Item:
  """One dispatch's inputs, placed on the mesh; `chunk` keeps the host batches."""
  chunk: Chunk
  n: int
  stacked: Any = None
  singles: list | None = None


class _TrainInput:
  """The feeder's producer: chunks of the schedule, checked and placed (runs on its thread)."""

  def __init__(self, pipeline: InputPipeline, signature: Signature, runner: Runner,
               config: RunConfig, last: int | None):
    self.pipeline, self.signature, self.runner = pipeline, signature, runner
    self.config, self.last = config, last
    self._dropped: set[int] = set()

  def __call__(self, step: int) -> tuple[_Item, int]:
    while True:
      n = _chunk(step, self.config, self.last)
      if n <= 0:
        raise StopIteration
      k = self.config.steps_per_loop
      chunk = self.pipeline.take(n, stacked=k > 1 and n == k)
      if chunk is None:
        raise StopIteration
      if chunk.stacked is not None:
        self.signature.check(*jax.tree.map(lambda x: x[0], chunk.stacked))
        return _Item(chunk, n, stacked=self.runner.feed.place_stacked(chunk.stacked)), n
      singles = [self.runner.feed.place(b) for b in chunk.singles if self._keep(b)]
      if singles:
        return _Item(chunk, len(singles), singles=singles), len(singles)

  def _keep(self, batch) -> bool:
    """Checks a batch; a last partial batch that the data axis does not divide is dropped."""
    self.signature.check(*batch)
    size = batch_size_of(batch[0])
    if self.runner.feed.divides(size):
      return True
    if size not in self._dropped:
      self._dropped.add(size)
      logger.warning(
          'Dropped a training batch of %d examples: the %r mesh axis (%d devices) does not '
          'divide it (a last partial batch?). Use drop_remainder=True or a batch size that '
          'is a multiple of %d to train on every example.', size, self.runner.feed.data_axis,
          self.runner.feed.data_size, self.runner.feed.data_size)
    return False


def run_train_loop(estimator, runner: Runner, store: CheckpointStore, config: RunConfig,
                   optimizer, metric_shapes, state: TrainState, pipeline: InputPipeline,
                   signature: Signature, start: int, last: int | None,
                   hooks: list[Hook]) -> tuple[TrainState, int]:
  """Runs train steps from global step `start` until `last`, a hook's stop, or input end.

  Each dispatch runs one step or, with `steps_per_loop=K`, K steps as a scan
  over stacked batches (the steps left before a log/pause/last step run one
  by one, so there are only two executables); the state is donated from
  dispatch to dispatch. Saves at pause points on the config's cadence and
  once at the end; on any error, stops the feeder and waits for pending saves
  so the last good checkpoint is complete, then re-raises. Returns the final
  state (the newest checkpoint's) and step.
  """
  first = pipeline.peek()
  size, accumulate = batch_size_of(first[0]), config.gradient_accumulation_steps
  if size % accumulate:
    raise ValueError(f'gradient_accumulation_steps {accumulate} does not divide the batch '
                     f'size {size}.')
  state_shardings = shardings_of(state)
  single = runner.train_step(optimizer, state_shardings)
  stacked = None
  checked = runner.empty_checks()  # the first failed device check (NaN loss included)
  metrics = runner.zeros_like_shapes(metric_shapes)
  reset = runner.true
  step_logger = StepLogger(config.log_step_count_steps, start, size * jax.process_count())
  ctx = RunContext(estimator, start, state)
  meta = {'signature': signature.to_json()}
  step, saved_step, saved_time = start, start, time.monotonic()
  inflight = collections.deque()
  loss, ended = None, False
  secs_due = _secs_due_fn(config)

  def raise_failed_checks():
    """Reads the check slot (a sync the caller makes anyway) and raises its failure."""
    failure = checks.read(checked)
    if failure is None:
      return
    kept = (f'the last checkpoint (step {saved_step}) is kept.' if saved_step else
            'no checkpoint was written.')
    if failure.template == NAN_LOSS:
      raise NanLossDuringTrainingError(
          f'NaN loss during training at global step {failure.step}; {kept}')
    raise checks.InvalidInputError(f'At global step {failure.step}: {failure.message} '
                                   f'{kept[0].upper()}{kept[1:]}')

  def save():
    nonlocal saved_step, saved_time
    raise_failed_checks()
    store.save(step, state, pipeline.capture(), {**meta, 'global_step': step})
    saved_step, saved_time = step, time.monotonic()

  for hook in hooks:
    hook.begin(ctx)
  every = _pause_every(config)
  pause_point = (lambda s: s % every[0] == 0) if every else (lambda s: False)
  feeder = make_feeder(_TrainInput(pipeline, signature, runner, config, last),
                       background=background_pays(pipeline), start=start,
                       depth=config.prefetch_batches, pause_after=pause_point)
  bar = progress_bar(None if last is None else last - start, 'train', 'step',
                     config.progress_bar)
  guard = PreemptionGuard().__enter__()
  try:
    while last is None or step < last:
      try:
        item = feeder.get()
      except StopIteration:
        ended = True
        break
      if item.stacked is not None:
        stacked = stacked or runner.train_step(optimizer, state_shardings, stacked=True)
        state, checked, loss, metrics = stacked(state, checked, metrics, reset, *item.stacked)
        reset = runner.false
      for batch in item.singles or ():
        state, checked, loss, metrics = single(state, checked, metrics, reset, *batch)
        reset = runner.false
      step += item.n
      inflight.append(loss)
      if len(inflight) > MAX_INFLIGHT_STEPS:
        inflight.popleft().block_until_ready()
      if step_logger.due(step):
        raise_failed_checks()
        step_logger.log(step, float(loss), metrics)
        reset = runner.true
      if pause_point(step):
        if config.save_checkpoints_steps or secs_due(saved_time):
          save()
        feeder.resume()
      ctx.step, ctx.state = step, state
      for hook in hooks:
        hook.after_step(ctx)
      bar.update(item.n)
      if ctx.stop_requested:
        break
      if guard.requested(step):
        logger.warning('%s received: stopping at global step %d and saving a checkpoint there.',
                       guard.signal_name or 'Preemption notice', step)
        break
    if ended:
      logger.info('Input ended at global step %d.', step)
    for hook in hooks:
      hook.end(ctx)
    pipeline.unget([i.chunk for i in feeder.close()])  # the read-ahead was not consumed
    if step != saved_step:
      save()
    if loss is not None:
      logger.info('Loss for final step: %s.', float(loss))
  finally:
    guard.__exit__()
    feeder.close()
    bar.close()
    store.wait()
  return state, step
