"""`run_evaluator`: a job that follows a trainer's model_dir and evaluates its checkpoints.

tf.estimator's evaluator task (`train_and_evaluate`'s 'evaluator' job,
`continuous_eval`). While another process trains into model_dir, this one
polls it and evaluates every finished checkpoint step exactly once, oldest
first, so the eval curve has a point per checkpoint (tf evaluates only the
newest one and skips the steps saved meanwhile). A step deleted before it is
read (keep_checkpoint_max pruning) is skipped with a log line. The evaluator
only reads model_dir: it takes no lock, and `Estimator.evaluate` writes the
summaries.

It ends once the checkpoint of `stop_at_step` (or a later one) is evaluated;
without `stop_at_step`, once it has evaluated the step at which the trainer
finished (`mark_training_finished`); and after `timeout_secs` without a new
checkpoint. The trainer's finish is a file beside the checkpoints rather
than a flag in the last checkpoint's metadata, because train() often learns
that it is finished (its input ended, a hook stopped it) after that
checkpoint was written; a preempted trainer does not write it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jestimator.checkpoint import CheckpointReadError, CheckpointStore
from jestimator.lifecycle.specs import EvalSpec
from jestimator.reporting import logger

FINISHED_NAME = 'training_finished.json'


# -- the trainer's side: "no more checkpoints are coming" ---------------------------------

def mark_training_finished(model_dir: str, step: int) -> None:
  """Records that training finished at global `step` (its checkpoint already on disk).

  Called by train() when it ends for good (max_steps, input end, a hook's stop),
  not when it is preempted. Process 0 writes; the write is atomic (rename).
  """
  if jax.process_index() != 0:
    return
  path = os.path.join(model_dir, FINISHED_NAME)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump({'global_step': int(step)}, f)
  os.replace(path + '.tmp', path)


def clear_training_finished(model_dir: str) -> None:
  """Forgets a previous train()'s finish: called when train() starts (it holds the lock)."""
  if jax.process_index() == 0:
    try:
      os.remove(os.path.join(model_dir, FINISHED_NAME))
    except FileNotFoundError:
      pass


def training_finished_step(model_dir: str) -> int | None:
  """The global step at which training finished, or None while it has not (or never ran)."""
  try:
    with open(os.path.join(model_dir, FINISHED_NAME), encoding='utf-8') as f:
      return int(json.load(f)['global_step'])
  except FileNotFoundError:
    return None
  except (ValueError, KeyError, TypeError) as e:
    logger.warning('Ignoring the unreadable %s in %s: %s', FINISHED_NAME, model_dir, e)
    return None


# -- the evaluator --------------------------------------------------------------------------

def run_evaluator(estimator, eval_spec: EvalSpec, stop_at_step: int | None = None,
                  poll_secs: float = 1.0, timeout_secs: float | None = None
                  ) -> dict[str, Any] | None:
  """Evaluates each new checkpoint of `estimator.model_dir` once, in step order.

  Each step is evaluated as `estimator.evaluate(eval_spec.input_fn,
  steps=eval_spec.steps, hooks=eval_spec.hooks, checkpoint_path=<model_dir>/<step>,
  name=eval_spec.name)`; the steps already in model_dir when it starts are
  evaluated too (a restarted evaluator evaluates them again).

  Args:
    estimator: an Estimator whose model_dir a trainer writes (this one only reads).
    eval_spec: what to evaluate (its exporters and time-based fields are not used here).
    stop_at_step: end once a checkpoint of this global step or later is evaluated.
      None: end once the trainer has finished and its last checkpoint is evaluated.
    poll_secs: seconds between looks at model_dir when there is nothing new.
    timeout_secs: end after this many seconds without a new checkpoint (None: wait on).

  Returns:
    The last evaluation's results (with `global_step`), or None if none ran.
  """
  if stop_at_step is not None and (not isinstance(stop_at_step, (int, np.integer))
                                   or stop_at_step <= 0):
    raise ValueError(f'run_evaluator: stop_at_step must be a positive int or None, got '
                     f'{stop_at_step!r}.')
  if poll_secs < 0 or (timeout_secs is not None and timeout_secs < 0):
    raise ValueError(f'run_evaluator: poll_secs and timeout_secs must be >= 0, got '
                     f'{poll_secs!r} and {timeout_secs!r}.')
  model_dir = estimator.model_dir
  store = CheckpointStore(model_dir, keep=None, async_save=False)  # reads only
  results, done = None, 0  # done: the newest step evaluated or skipped
  seen: set[int] = set()  # steps listed once, kept so that a deleted one is named
  last_news = time.monotonic()
  logger.info('Evaluator: following the checkpoints of %s%s.', model_dir,
              '' if stop_at_step is None else f' until step {stop_at_step}')
  while True:
    finished = training_finished_step(model_dir)  # first: its step is listed by then
    step = _oldest_after(store, done, seen)
    waited_out = (step is None and timeout_secs is not None
                  and time.monotonic() - last_news >= timeout_secs)
    step, finished, waited_out = _as_process_0_sees(step, finished, waited_out)
    if step is not None:
      evaluated = _evaluate(estimator, eval_spec, store, step)
      results = evaluated if evaluated is not None else results
      done, last_news = step, time.monotonic()
      if evaluated is not None and stop_at_step is not None and step >= stop_at_step:
        logger.info('Evaluator: done, step %d reached stop_at_step %d.', step, stop_at_step)
        return results
      continue
    if stop_at_step is None and finished is not None and done >= finished:
      logger.info('Evaluator: done, training finished at step %d.', finished)
      return results
    if waited_out:
      logger.info('Evaluator: no new checkpoint in %s for %g s; stopping%s.', model_dir,
                  timeout_secs, '' if results is None else
                  f' (last evaluated step {int(results["global_step"])})')
      return results
    time.sleep(poll_secs)


def _oldest_after(store: CheckpointStore, done: int, seen: set[int]) -> int | None:
  """The oldest step newer than `done` that was ever listed (adding this look's listing to
  `seen`), or None. A listed step deleted since is returned too, to be reported."""
  try:
    seen.update(store.all_steps())
  except OSError as e:  # a step vanished while orbax listed it: look again next time
    logger.debug('Listing checkpoints failed (%s); retrying.', e)
  newer = [s for s in seen if s > done]
  seen.difference_update([s for s in seen if s <= done])
  return min(newer) if newer else None


def _evaluate(estimator, spec: EvalSpec, store: CheckpointStore,
              step: int) -> dict[str, Any] | None:
  """`estimator.evaluate` of `step`; None (logged) if the step is gone or unreadable."""
  path = store.path(step)
  if not os.path.isdir(path):
    logger.info('Evaluator: checkpoint step %d was deleted before it was evaluated '
                '(keep_checkpoint_max?); skipping it.', step)
    return None
  try:
    return estimator.evaluate(spec.input_fn, steps=spec.steps, hooks=list(spec.hooks),
                              checkpoint_path=path, name=spec.name)
  except (CheckpointReadError, ValueError) as e:
    if not os.path.isdir(path):
      logger.info('Evaluator: checkpoint step %d was deleted while it was being read '
                  '(keep_checkpoint_max?); skipping it.', step)
      return None
    if isinstance(e, CheckpointReadError):  # damaged on disk: later steps may be fine
      logger.warning('Evaluator: skipping checkpoint step %d: %s', step, e)
      return None
    raise  # a wrong model or input: every step would fail alike


def _as_process_0_sees(step: int | None, finished: int | None,
                       waited_out: bool) -> tuple[int | None, int | None, bool]:
  """Process 0's view, so that every process of the job evaluates the same steps."""
  if jax.process_count() == 1:
    return step, finished, waited_out
  got = multihost_utils.broadcast_one_to_all(np.array(
      [-1 if step is None else step, -1 if finished is None else finished, int(waited_out)],
      np.int32))
  got = [int(v) for v in np.asarray(got)]
  return (None if got[0] < 0 else got[0]), (None if got[1] < 0 else got[1]), bool(got[2])
