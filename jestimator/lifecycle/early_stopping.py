"""Early stopping: tf.estimator's `stop_if_*_hook`s, deciding from the eval event files.

Evaluations write their metrics to `model_dir/eval` (TensorBoard event files,
see `jestimator.summary`). These hooks read those files back
(`read_eval_metrics`), so the decision survives restarts and needs no device
value: a hook requests nothing. It checks in `begin` (train_and_evaluate
calls train() again right after each evaluation, so that is when a new
result appears) and then every `run_every_steps` steps or `run_every_secs`
seconds, and asks the loop to stop; `hook.stopped_at` is the global step
where it did.

  from jestimator.lifecycle import early_stopping
  hook = early_stopping.stop_if_no_decrease_hook(est, 'loss', 1000)
  est.train(input_fn, max_steps=10_000, hooks=[hook])  # or in a TrainSpec's hooks

With several processes every process must stop at the same step: process 0
reads the files and decides, and the decision is broadcast to all
(`multihost_utils.broadcast_one_to_all`). So checks happen only where every
process is at the same step for sure: in `begin` and every `run_every_steps`
steps; `run_every_secs` is ignored (clocks differ between processes).
"""

from __future__ import annotations

import collections
import logging
import operator
import os
import time
from typing import Any, Callable

import jax
import numpy as np
from jax.experimental import multihost_utils

from jestimator.hooks.base import Hook, RunContext
from jestimator.summary import read_scalars

logger = logging.getLogger('jestimator')


def read_eval_metrics(eval_dir: str) -> dict[int, dict[str, float]]:
  """The evaluations in `eval_dir`'s event files: {global step: {metric: value}}, by step."""
  by_step: dict[int, dict[str, float]] = collections.defaultdict(dict)
  for tag, points in read_scalars(eval_dir).items():
    for step, value in points:
      by_step[step][tag] = value
  return dict(sorted(by_step.items()))


class EarlyStoppingHook(Hook):
  """Requests a stop when `should_stop_fn()` returns True (see `make_early_stopping_hook`).

  Attributes:
    stopped_at: the global step where it requested the stop (None until then).
  """

  def __init__(self, should_stop_fn: Callable[[], bool], run_every_secs: float | None = 60,
               run_every_steps: int | None = None):
    if not callable(should_stop_fn):
      raise TypeError('`should_stop_fn` must be callable.')
    self._should_stop_fn = should_stop_fn
    self._every_secs, self._every_steps = run_every_secs, run_every_steps
    self.stopped_at: int | None = None
    self._last_step, self._last_time = 0, 0.0

  def begin(self, run_context: RunContext) -> None:
    self.stopped_at = None
    self._check(run_context)

  def after_step(self, run_context: RunContext) -> None:
    if self.stopped_at is None and self._due(run_context.step):
      self._check(run_context)

  def _due(self, step: int) -> bool:
    if self._every_steps is not None:
      return step >= self._last_step + self._every_steps
    if self._every_secs is not None and jax.process_count() == 1:
      return time.monotonic() - self._last_time >= self._every_secs
    return False

  def _decide(self) -> bool:
    """`should_stop_fn()`; with several processes, process 0's answer on every process."""
    if jax.process_count() == 1:
      return bool(self._should_stop_fn())
    stop = bool(self._should_stop_fn()) if jax.process_index() == 0 else False
    return bool(multihost_utils.broadcast_one_to_all(np.bool_(stop)))

  def _check(self, run_context: RunContext) -> None:
    step = run_context.step
    self._last_step, self._last_time = step, time.monotonic()
    if self._decide():
      logger.info('Requesting early stopping at global step %d', step)
      self.stopped_at = step
      run_context.request_stop()


def make_early_stopping_hook(estimator: Any, should_stop_fn: Callable[[], bool],
                             run_every_secs: float | None = 60,
                             run_every_steps: int | None = None) -> EarlyStoppingHook:
  """A hook that stops training when `should_stop_fn()` (no arguments) returns True.

  It calls `should_stop_fn` in `begin` and then every `run_every_secs` seconds
  or every `run_every_steps` global steps (give at most one; neither: in
  `begin` only). With several processes only `begin` and `run_every_steps`
  checks run, on process 0, and its answer is broadcast.
  """
  _check_estimator(estimator)
  if run_every_secs is not None and run_every_steps is not None:
    raise ValueError('Only one of `run_every_secs` and `run_every_steps` must be set.')
  if run_every_steps is not None and (not isinstance(run_every_steps, int)
                                      or run_every_steps <= 0):
    raise ValueError(f'run_every_steps must be a positive int, got {run_every_steps!r}.')
  if jax.process_count() > 1 and run_every_steps is None and run_every_secs is not None:
    logger.info('Early stopping with %d processes: the time-based check (run_every_secs=%s) '
                'is off; checks run when train() begins. Set run_every_steps to check during '
                'training too.', jax.process_count(), run_every_secs)
  return EarlyStoppingHook(should_stop_fn, run_every_secs, run_every_steps)


def _check_estimator(estimator: Any) -> None:
  from jestimator.estimator import Estimator  # here: the estimator imports the lifecycle
  if not isinstance(estimator, Estimator):
    raise TypeError(f'`estimator` must have type `je.Estimator`. Got: {type(estimator)}')


def _eval_dir(estimator: Any, eval_dir: str | None) -> str:
  """`eval_dir`, by default the estimator's (`model_dir/eval`)."""
  _check_estimator(estimator)
  return estimator.eval_dir() if eval_dir is None else os.fspath(eval_dir)


def _metric_of(metrics: dict[str, float], metric_name: str, step: int, eval_dir: str) -> float:
  if metric_name not in metrics:
    raise ValueError(f'Early stopping: the evaluation at global step {step} in {eval_dir!r} '
                     f'has no metric {metric_name!r}; it has {sorted(metrics)}.')
  return metrics[metric_name]


def _stop_if_threshold_crossed_hook(estimator, metric_name, threshold, higher_is_better,
                                    eval_dir, min_steps, run_every_secs, run_every_steps):
  """A hook that stops once an evaluation at step >= min_steps crossed `threshold`."""
  eval_dir = _eval_dir(estimator, eval_dir)
  is_lhs_better = operator.gt if higher_is_better else operator.lt
  greater_or_lesser = 'greater than' if higher_is_better else 'less than'

  def stop_if_threshold_crossed_fn() -> bool:
    for step, metrics in read_eval_metrics(eval_dir).items():
      if step < min_steps:
        continue
      value = _metric_of(metrics, metric_name, step, eval_dir)
      if is_lhs_better(value, threshold):
        logger.info('At step %s, metric "%s" has value %s which is %s the configured threshold '
                    '(%s) for early stopping.', step, metric_name, value, greater_or_lesser,
                    threshold)
        return True
    return False

  return make_early_stopping_hook(estimator, stop_if_threshold_crossed_fn, run_every_secs,
                                  run_every_steps)


def _stop_if_no_metric_improvement_hook(estimator, metric_name, max_steps_without_improvement,
                                        higher_is_better, eval_dir, min_steps, run_every_secs,
                                        run_every_steps):
  """A hook that stops once the best evaluation (from min_steps on) is
  `max_steps_without_improvement` global steps older than a later one."""
  eval_dir = _eval_dir(estimator, eval_dir)
  is_lhs_better = operator.gt if higher_is_better else operator.lt
  increase_or_decrease = 'increase' if higher_is_better else 'decrease'

  def stop_if_no_metric_improvement_fn() -> bool:
    best_value, best_step = None, None
    for step, metrics in read_eval_metrics(eval_dir).items():
      if step < min_steps:
        continue
      value = _metric_of(metrics, metric_name, step, eval_dir)
      if best_value is None or is_lhs_better(value, best_value):
        best_value, best_step = value, step
      if step - best_step >= max_steps_without_improvement:
        logger.info('No %s in metric "%s" for %s steps, which is greater than or equal to max '
                    'steps (%s) configured for early stopping.', increase_or_decrease,
                    metric_name, step - best_step, max_steps_without_improvement)
        return True
    return False

  return make_early_stopping_hook(estimator, stop_if_no_metric_improvement_fn, run_every_secs,
                                  run_every_steps)


def stop_if_higher_hook(estimator, metric_name: str, threshold: float,
                        eval_dir: str | None = None, min_steps: int = 0,
                        run_every_secs: float | None = 60,
                        run_every_steps: int | None = None) -> EarlyStoppingHook:
  """Stops training once an evaluation's `metric_name` is higher than `threshold`.

  Evaluations at global steps below `min_steps` are ignored. `eval_dir`:
  where the evaluations' event files are (default `estimator.eval_dir()`).
  """
  return _stop_if_threshold_crossed_hook(estimator, metric_name, threshold, True, eval_dir,
                                         min_steps, run_every_secs, run_every_steps)


def stop_if_lower_hook(estimator, metric_name: str, threshold: float,
                       eval_dir: str | None = None, min_steps: int = 0,
                       run_every_secs: float | None = 60,
                       run_every_steps: int | None = None) -> EarlyStoppingHook:
  """Stops training once an evaluation's `metric_name` is lower than `threshold`
  (evaluations below global step `min_steps` are ignored)."""
  return _stop_if_threshold_crossed_hook(estimator, metric_name, threshold, False, eval_dir,
                                         min_steps, run_every_secs, run_every_steps)


def stop_if_no_increase_hook(estimator, metric_name: str, max_steps_without_increase: int,
                             eval_dir: str | None = None, min_steps: int = 0,
                             run_every_secs: float | None = 60,
                             run_every_steps: int | None = None) -> EarlyStoppingHook:
  """Stops training once `metric_name` has not increased for `max_steps_without_increase`
  global steps: an evaluation that many steps after the best one (evaluations below
  `min_steps` are ignored)."""
  return _stop_if_no_metric_improvement_hook(estimator, metric_name, max_steps_without_increase,
                                             True, eval_dir, min_steps, run_every_secs,
                                             run_every_steps)


def stop_if_no_decrease_hook(estimator, metric_name: str, max_steps_without_decrease: int,
                             eval_dir: str | None = None, min_steps: int = 0,
                             run_every_secs: float | None = 60,
                             run_every_steps: int | None = None) -> EarlyStoppingHook:
  """Stops training once `metric_name` has not decreased for `max_steps_without_decrease`
  global steps: an evaluation that many steps after the best one (evaluations below
  `min_steps` are ignored)."""
  return _stop_if_no_metric_improvement_hook(estimator, metric_name, max_steps_without_decrease,
                                             False, eval_dir, min_steps, run_every_secs,
                                             run_every_steps)


__all__ = ['EarlyStoppingHook', 'make_early_stopping_hook', 'read_eval_metrics',
           'stop_if_higher_hook', 'stop_if_lower_hook', 'stop_if_no_decrease_hook',
           'stop_if_no_increase_hook']
