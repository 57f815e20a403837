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
from jestimator.hooks.hook_set import HookSet, check_hooks
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
  return check_hooks(hooks, 'train')


def _pause_every(config: RunConfig) -> tuple[int, ...]:
  """Cadences of the steps where a checkpoint may be saved."""
  if config.save_checkpoints_steps:
    return (config.save_checkpoints_steps,)
  if config.save_checkpoints_secs is not None:
    return (config.log_step_count_steps or _SYNC_EVERY,)
  return ()


def _chunk(step: int, k: int, cadences: tuple[int, ...], last: int | None) -> int:
  """Steps in the next dispatch: `k` (steps_per_loop), cut at the next multiple of a
  cadence (log, pause, a hook's requested steps) and at `last`."""
  n = k
  for every in cadences:
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
  span: tuple = ()  # the stacked rows to run: (offset, n) as step inputs


class _TrainInput:
  """The feeder's producer: chunks of the schedule, checked and placed (runs on its thread)."""

  def __init__(self, pipeline: InputPipeline, signature: Signature, runner: Runner,
               k: int, cadences: tuple[int, ...], last: int | None):
    self.pipeline, self.signature, self.runner = pipeline, signature, runner
    self.k, self.cadences, self.last = k, cadences, last
    self._dropped: set[int] = set()

  def __call__(self, step: int) -> tuple[_Item, int]:
    while True:
      n = _chunk(step, self.k, self.cadences, self.last)
      if n <= 0:
        raise StopIteration
      k = self.k  # stacked: n == k, or any span of an element tf.data stacked itself
      chunk = self.pipeline.take(n, stacked=k > 1 and (n == k or self.pipeline.stack == k))
      if chunk is None:
        raise StopIteration
      if chunk.stacked is not None:
        self.signature.check(*jax.tree.map(lambda x: x[0], chunk.stacked))
        span = (self.runner.index(chunk.offset), self.runner.index(chunk.n))
        return _Item(chunk, chunk.n, stacked=self.runner.feed.place_stacked(chunk.stacked),
                     span=span), chunk.n
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


def fetch_values(step: int, loss, metrics: dict, keys: set[str]) -> dict[str, Any]:
  """The requested values as numpy: one `jax.device_get` (the loop's only value sync)."""
  tree = {k: metrics[k].compute() for k in keys if k in metrics}
  if 'loss' in keys and loss is not None:
    tree['loss'] = loss
  values = {k: np.asarray(v)[()] for k, v in jax.device_get(tree).items()}
  if 'global_step' in keys:
    values['global_step'] = np.int64(step)
  return values


def run_train_loop(estimator, runner: Runner, store: CheckpointStore, config: RunConfig,
                   optimizer, metric_shapes, state: TrainState, pipeline: InputPipeline,
                   signature: Signature, start: int, last: int | None,
                   hooks: list[Hook], listeners: list = ()) -> tuple[TrainState, int, bool]:
  """Runs train steps from global step `start` until `last`, a hook's stop, or input end.

  Each dispatch runs one step or, with `steps_per_loop=K`, up to K steps over
  rows of a stacked element (a log/pause/requested/last step inside an
  element splits it into spans of the same executable; batches handed back or
  from a Python iterable run one by one); the state is donated
  from dispatch to dispatch. The values hooks request are fetched with the
  log line's, on their steps only. Saves at pause points on the config's
  cadence and once at the end; on any error, stops the feeder and waits for
  pending saves so the last good checkpoint is complete, then re-raises.
  Returns the final state and step (the newest checkpoint's, unless a NaN
  stopped training under `NanTensorHook(fail_on_nan_loss=False)`), and whether
  training ended for good (`last` reached, the input ended, a hook stopped it;
  not a preemption notice, not a NaN, not a round of train_and_evaluate that
  more rounds follow: a hook's `final_round` False).
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
  ctx = RunContext(estimator, start, state, mode='train')
  ctx.examples_per_step = size * jax.process_count()
  hook_set = HookSet(hooks, ctx, {'loss', 'global_step', *metrics}, listeners)
  meta = {'signature': signature.to_json()}
  step, saved_step, saved_time = start, start, time.monotonic()
  inflight = collections.deque()
  loss, ended, poisoned, preempted = None, False, False, False
  secs_due = _secs_due_fn(config)
  tolerate_nan = any(getattr(h, 'fail_on_nan_loss', True) is False for h in hooks)

  def raise_failed_checks():
    """Reads the check slot (a sync the caller makes anyway) and raises its failure."""
    nonlocal poisoned
    failure = checks.read(checked)
    if failure is None or poisoned:
      return
    kept = (f'the last checkpoint (step {saved_step}) is kept.' if saved_step else
            'no checkpoint was written.')
    if failure.template == NAN_LOSS and tolerate_nan:
      logger.warning('NaN loss during training at global step %d: stopping (NanTensorHook '
                     'with fail_on_nan_loss=False); %s', failure.step, kept)
      poisoned = True
      ctx.request_stop()
      return
    if failure.template == NAN_LOSS:
      raise NanLossDuringTrainingError(
          f'NaN loss during training at global step {failure.step}; {kept}')
    raise checks.InvalidInputError(f'At global step {failure.step}: {failure.message} '
                                   f'{kept[0].upper()}{kept[1:]}')

  def save():
    nonlocal saved_step, saved_time
    raise_failed_checks()
    if poisoned:
      return
    ctx.step, ctx.state = step, state
    hook_set.around_save(lambda: store.save(step, state, pipeline.capture(),
                                            {**meta, 'global_step': step}))
    saved_step, saved_time = step, time.monotonic()

  ctx.state = state
  hook_set.begin()
  every = _pause_every(config)
  pause_point = (lambda s: s % every[0] == 0) if every else (lambda s: False)
  cadences = (config.log_step_count_steps, *every, *hook_set.cadences)
  feeder = make_feeder(
      _TrainInput(pipeline, signature, runner, config.steps_per_loop, cadences, last),
      background=background_pays(pipeline), start=start, depth=config.prefetch_batches,
      pause_after=pause_point)
  bar = progress_bar(None if last is None else last - start, 'train', 'step',
                     config.progress_bar)
  guard = PreemptionGuard().__enter__()
  try:
    while (last is None or step < last) and not ctx.stop_requested:
      try:
        item = feeder.get()
      except StopIteration:
        ended = True
        break
      if item.stacked is not None:
        stacked = stacked or runner.train_step(optimizer, state_shardings, stacked=True)
        state, checked, loss, metrics = stacked(state, checked, metrics, reset, *item.stacked,
                                                *item.span)
        reset = runner.false
      for batch in item.singles or ():
        state, checked, loss, metrics = single(state, checked, metrics, reset, *batch)
        reset = runner.false
      step += item.n
      inflight.append(loss)
      if len(inflight) > MAX_INFLIGHT_STEPS:
        inflight.popleft().block_until_ready()
      due, values, log_due = hook_set.due(step), None, step_logger.due(step)
      if log_due:
        raise_failed_checks()
      if (log_due and not poisoned) or due:
        keys = hook_set.keys(due) | ({'loss', *metrics} if log_due else set())
        values = fetch_values(step, loss, metrics, keys)
      if log_due and not poisoned:
        step_logger.log(step, values, metrics)
      if values is not None and (log_due or not values.keys().isdisjoint(metrics)):
        reset = runner.true  # train metrics aggregate since their last fetch
      if pause_point(step) and not poisoned:
        if config.save_checkpoints_steps or secs_due(saved_time):
          save()
        feeder.resume()
      hook_set.after_step(step, state, due, values)
      bar.update(item.n)
      if guard.requested(step):
        logger.warning('%s received: stopping at global step %d and saving a checkpoint there.',
                       guard.signal_name or 'Preemption notice', step)
        preempted = True
        break
    if ended:
      logger.info('Input ended at global step %d.', step)
    ctx.step, ctx.state = step, state
    hook_set.end(lambda keys: fetch_values(step, loss, metrics, keys) if loss is not None
                 else {})
    pipeline.unget([i.chunk for i in feeder.close()])  # the read-ahead was not consumed
    if step != saved_step:
      save()
    hook_set.end_listeners()
    finished = not (preempted or poisoned) and (ended or step == last or ctx.stop_requested)
    finished = finished and all(getattr(h, 'final_round', True) for h in hooks)
    if loss is not None and finished:
      logger.info('Loss for final step: %s.', float(loss))
  finally:
    guard.__exit__()
    hook_set.close()
    feeder.close()
    bar.close()
    store.wait()
  return state, step, finished
