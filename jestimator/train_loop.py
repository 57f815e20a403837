"""The training loop: the host side of `Estimator.train`.

Dispatches the compiled train step batch after batch without waiting on the
device, except to log (every `log_step_count_steps`), to save, and to keep at
most `MAX_INFLIGHT_STEPS` steps queued. Checkpoint cadence, hooks, the NaN
guard and the progress bar live here; the math lives in `training/steps.py`.
"""

from __future__ import annotations

import collections
import time

import jax
import numpy as np

from jestimator.checkpoint import CheckpointStore
from jestimator.config import RunConfig
from jestimator.hooks.base import Hook, RunContext
from jestimator.inputs.padding import batch_size_of
from jestimator.inputs.pipeline import InputPipeline
from jestimator.inputs.signature import Signature
from jestimator.reporting import StepLogger, logger, progress_bar
from jestimator.training.runner import Runner
from jestimator.training.train_state import TrainState

# Steps the host may run ahead of the device. Bounding it caps memory and
# avoids an XLA:CPU collective deadlock seen with many in-flight multi-device
# steps (8 virtual devices on 2 cores); waiting on step s-4 never idles the device.
MAX_INFLIGHT_STEPS = 4


class NanLossDuringTrainingError(RuntimeError):
  """The training loss became NaN or infinite."""


def run_train_loop(estimator, runner: Runner, store: CheckpointStore, config: RunConfig,
                   optimizer, metric_shapes, state: TrainState, pipeline: InputPipeline,
                   signature: Signature, batch, start: int, last: int | None,
                   hooks: list[Hook]) -> None:
  """Runs train steps from global step `start` until `last`, a hook's stop, or input end.

  `batch` is the first batch, already fed; the state is donated step to step.
  Saves on the config's cadence and once at the end; on any error, waits for
  pending saves so the last good checkpoint is complete, then re-raises.
  """
  train_step = runner.train_step(optimizer)
  nan_step = runner.scalar(-1, np.int32)
  metrics = runner.zeros_like_shapes(metric_shapes)
  reset = runner.true
  examples = batch_size_of(batch[0]) * jax.process_count()
  step_logger = StepLogger(config.log_step_count_steps, start, examples)
  ctx = RunContext(estimator, start, state)
  meta = {'signature': signature.to_json()}
  step, saved_step, saved_time = start, start, time.monotonic()
  inflight = collections.deque()
  loss = None

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

  for hook in hooks:
    hook.begin(ctx)
  bar = progress_bar(None if last is None else last - start, 'train', 'step',
                     config.progress_bar)
  try:
    while last is None or step < last:
      state, nan_step, loss, metrics = train_step(state, nan_step, metrics, reset, *batch)
      reset = runner.false
      step += 1
      inflight.append(loss)
      if len(inflight) > MAX_INFLIGHT_STEPS:
        inflight.popleft().block_until_ready()
      if step_logger.due(step):
        check_finite()
        step_logger.log(step, float(loss), metrics)
        reset = runner.true
      if ((config.save_checkpoints_steps and step % config.save_checkpoints_steps == 0) or
          (config.save_checkpoints_secs is not None and
           time.monotonic() - saved_time >= config.save_checkpoints_secs)):
        save()
      ctx.step, ctx.state = step, state
      for hook in hooks:
        hook.after_step(ctx)
      bar.update(1)
      if ctx.stop_requested or (last is not None and step >= last):
        break
      try:
        features, labels = next(pipeline)
      except StopIteration:
        logger.info('Input ended at global step %d.', step)
        break
      signature.check(features, labels)
      batch = runner.feed((features, labels))
    for hook in hooks:
      hook.end(ctx)
    if step != saved_step:
      save()
    if loss is not None:
      logger.info('Loss for final step: %s.', float(loss))
  finally:
    bar.close()
    store.wait()
