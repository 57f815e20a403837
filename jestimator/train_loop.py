"""The training loop: the host side of `Estimator.train`.

Dispatches the compiled train step (or `steps_per_loop` steps at once) batch
after batch without waiting on the device, except to log (every
`log_step_count_steps`), to save, and to keep at most `MAX_INFLIGHT_STEPS`
dispatches queued. Checkpoint cadence, hooks, the NaN
guard and the progress bar live here; the math lives in `training/steps.py`.
"""

from __future__ import annotations

import collections
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from jestimator.checkpoint import CheckpointStore
from jestimator.config import RunConfig
from jestimator.hooks.base import Hook, RunContext
from jestimator.inputs.padding import batch_size_of
from jestimator.inputs.pipeline import InputPipeline
from jestimator.inputs.signature import Signature
from jestimator.reporting import StepLogger, logger, progress_bar
from jestimator.training.runner import Runner, shardings_of
from jestimator.training.train_state import TrainState

# Steps the host may run ahead of the device. Bounding it caps memory and
# avoids an XLA:CPU collective deadlock seen with many in-flight multi-device
# steps (8 virtual devices on 2 cores); waiting on step s-4 never idles the device.
MAX_INFLIGHT_STEPS = 4
_AGREE_EVERY = 100


class NanLossDuringTrainingError(RuntimeError):
  """The training loss became NaN or infinite."""


def _secs_due_fn(config: RunConfig):
  """Whether a time-based save is due. Saving is collective, so with many
  processes process 0's clock decides, read once `_AGREE_EVERY` steps have
  passed (one tiny broadcast) instead of every step."""
  secs = config.save_checkpoints_secs
  if secs is None:
    return lambda step, saved_time: False
  if jax.process_count() == 1:
    return lambda step, saved_time: time.monotonic() - saved_time >= secs

  agreed = [0]

  def due(step, saved_time):
    if step - agreed[0] < _AGREE_EVERY:
      return False
    agreed[0] = step
    return bool(multihost_utils.broadcast_one_to_all(
        np.bool_(time.monotonic() - saved_time >= secs)))

  return due


def _chunk(step: int, config: RunConfig, last: int | None) -> int:
  """Steps in the next dispatch: steps_per_loop, cut at the next log/save step and `last`."""
  n = config.steps_per_loop
  for every in (config.log_step_count_steps, config.save_checkpoints_steps):
    if every:
      n = min(n, every - step % every)
  return n if last is None else min(n, last - step)


def run_train_loop(estimator, runner: Runner, store: CheckpointStore, config: RunConfig,
                   optimizer, metric_shapes, state: TrainState, pipeline: InputPipeline,
                   signature: Signature, batch, start: int, last: int | None,
                   hooks: list[Hook]) -> None:
  """Runs train steps from global step `start` until `last`, a hook's stop, or input end.

  `batch` is the first host batch. Each dispatch runs one step or, with
  `steps_per_loop=K`, K steps as a scan over stacked batches (steps left
  before a log/save/last step run one by one, so there are only two
  executables); the state is donated
  from dispatch to dispatch. Saves on the config's cadence and once at the
  end; on any error, waits for pending saves so the last good checkpoint is
  complete, then re-raises.
  """
  size, accumulate = batch_size_of(batch[0]), config.gradient_accumulation_steps
  if size % accumulate:
    raise ValueError(f'gradient_accumulation_steps {accumulate} does not divide the batch '
                     f'size {size}.')
  state_shardings = shardings_of(state)
  single, stacked = runner.train_step(optimizer, state_shardings), None
  nan_step = runner.scalar(-1, np.int32)
  metrics = runner.zeros_like_shapes(metric_shapes)
  reset = runner.true
  step_logger = StepLogger(config.log_step_count_steps, start, size * jax.process_count())
  ctx = RunContext(estimator, start, state)
  meta = {'signature': signature.to_json()}
  step, saved_step, saved_time = start, start, time.monotonic()
  inflight = collections.deque()
  loss, ended = None, False
  secs_due = _secs_due_fn(config)

  def check_finite():
    bad = int(nan_step)
    if bad >= 0:
      raise NanLossDuringTrainingError(
          f'NaN loss during training at global step {bad}; the last checkpoint '
          f'(step {saved_step}) is kept.')

  def save():
    nonlocal saved_step, saved_time
    check_finite()
    store.save(step, state, pipeline,
               {**meta, 'global_step': step, 'input_position': pipeline.position})
    saved_step, saved_time = step, time.monotonic()

  def next_batch():
    features, labels = next(pipeline)
    signature.check(features, labels)
    return features, labels

  for hook in hooks:
    hook.begin(ctx)
  bar = progress_bar(None if last is None else last - start, 'train', 'step',
                     config.progress_bar)
  try:
    while last is None or step < last:
      n = _chunk(step, config, last)
      if config.steps_per_loop == 1 or n < config.steps_per_loop:  # one step (K=1, or cut)
        n = 1
        state, nan_step, loss, metrics = single(state, nan_step, metrics, reset,
                                                *runner.feed(batch))
      else:
        batches = [batch]
        while len(batches) < n:
          try:
            batches.append(next_batch())
          except StopIteration:
            ended = True
            break
        stacked = stacked or runner.train_step(optimizer, state_shardings, stacked=True)
        if len(batches) == n:
          state, nan_step, loss, metrics = stacked(state, nan_step, metrics, reset,
                                                   *runner.feed.stacked(batches))
        else:  # the input ended inside the loop: the batches it had, one by one
          for b in batches:
            state, nan_step, loss, metrics = single(state, nan_step, metrics, reset,
                                                    *runner.feed(b))
            reset = runner.false
        n = len(batches)
      reset = runner.false
      step += n
      inflight.append(loss)
      if len(inflight) > MAX_INFLIGHT_STEPS:
        inflight.popleft().block_until_ready()
      if step_logger.due(step):
        check_finite()
        step_logger.log(step, float(loss), metrics)
        reset = runner.true
      if ((config.save_checkpoints_steps and step % config.save_checkpoints_steps == 0) or
          secs_due(step, saved_time)):
        save()
      ctx.step, ctx.state = step, state
      for hook in hooks:
        hook.after_step(ctx)
      bar.update(n)
      if ended or ctx.stop_requested or (last is not None and step >= last):
        break
      try:
        batch = next_batch()
      except StopIteration:
        ended = True
        break
    if ended:
      logger.info('Input ended at global step %d.', step)
    for hook in hooks:
      hook.end(ctx)
    if step != saved_step:
      save()
    if loss is not None:
      logger.info('Loss for final step: %s.', float(loss))
  finally:
    bar.close()
    store.wait()
