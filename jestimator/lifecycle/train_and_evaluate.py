"""`train_and_evaluate`: train, evaluating along the way (tf.estimator's, in one process).

Training runs in rounds, each a `train()` call up to the next evaluation
point; each round ends with a checkpoint, which every due EvalSpec then
evaluates, then its exporters run. The train state stays in device memory
between rounds: train() continues the live state and input, evaluate() reads
the live variables of the newest checkpoint, and the compiled steps are
cached, so rounds neither restore from disk nor recompile.

When to evaluate, per EvalSpec: at every multiple of `every_n_steps`
(deterministic), or — tf.estimator's way — once `start_delay_secs` have
passed and then at most every `throttle_secs` (a round is cut by a hook
when the time is up). Training ends at `max_steps`, when the input ends or
when a hook stops it (early stopping); the final checkpoint is evaluated by
every spec that has not evaluated it yet. With several processes every
process runs the same rounds (each evaluates its input shard; process 0
writes summaries); time-based cuts are decided by process 0 at log steps.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from jestimator.hooks.base import Hook, RunContext
from jestimator.lifecycle.specs import EvalSpec, TrainSpec


def _eval_specs(eval_spec) -> list[EvalSpec]:
  """One EvalSpec, a list of them (distinct names), or a dict name -> EvalSpec."""
  if isinstance(eval_spec, EvalSpec):
    return [eval_spec]
  if isinstance(eval_spec, Mapping):
    specs = [EvalSpec(**{**vars(s), 'name': name}) if s.name != name else s
             for name, s in eval_spec.items()]
  elif isinstance(eval_spec, Sequence) and not isinstance(eval_spec, str):
    specs = list(eval_spec)
  else:
    raise TypeError(f'eval_spec must be a je.EvalSpec, a list or a dict of them; got '
                    f'{type(eval_spec).__name__}.')
  for spec in specs:
    if not isinstance(spec, EvalSpec):
      raise TypeError(f'eval_spec entries must be je.EvalSpec, got {type(spec).__name__}.')
  names = [s.name for s in specs]
  if not specs or len(set(names)) != len(names):
    raise ValueError(f'Several EvalSpecs need distinct names (each writes to its own '
                     f'eval_<name> dir); got {names}.')
  return specs


class _EvalClock:
  """When each EvalSpec is due: step multiples, or start delay and throttle."""

  def __init__(self, specs: list[EvalSpec]):
    self.specs = specs
    now = time.monotonic()
    self._last = {id(s): now - s.throttle_secs for s in specs}  # first one after the delay
    self._begin = now

  def next_stop(self, step: int, max_steps: int | None) -> int | None:
    """The next global step where a step-based spec evaluates (or max_steps)."""
    stops = [(step // s.every_n_steps + 1) * s.every_n_steps for s in self.specs
             if s.every_n_steps]
    if max_steps is not None:
      stops.append(max_steps)
    return min(stops) if stops else None

  def time_due(self, spec: EvalSpec, now: float) -> bool:
    return (now - self._begin >= spec.start_delay_secs and
            now - self._last[id(spec)] >= spec.throttle_secs)

  def any_time_due(self) -> bool:
    now = time.monotonic()
    return any(self.time_due(s, now) for s in self.specs if not s.every_n_steps)

  def due(self, spec: EvalSpec, step: int) -> bool:
    if spec.every_n_steps:
      return step % spec.every_n_steps == 0
    return self.time_due(spec, time.monotonic())

  def evaluated(self, spec: EvalSpec) -> None:
    self._last[id(spec)] = time.monotonic()


class _CutWhenEvalDue(Hook):
  """Ends a training round when a time-based evaluation is due (process 0's clock
  decides at log steps when there are several processes)."""

  def __init__(self, clock: _EvalClock, every: int):
    self.clock, self.every = clock, every
    self.fired = False

  def begin(self, run_context: RunContext) -> None:
    self.fired = False

  def after_step(self, run_context: RunContext) -> None:
    if jax.process_count() == 1:
      due = self.clock.any_time_due()
    elif run_context.step % self.every == 0:
      due = bool(multihost_utils.broadcast_one_to_all(np.bool_(self.clock.any_time_due())))
    else:
      return
    if due:
      self.fired = True
      run_context.request_stop()


class _Round(Hook):
  """Tells train() whether this round ends training for good (an evaluator following
  model_dir then stops after it): not when more rounds follow."""

  def __init__(self, target: int | None, max_steps: int | None, cut: list):
    self.target, self.max_steps, self.cut = target, max_steps, cut
    self.step = None

  def end(self, run_context: RunContext) -> None:
    self.step = run_context.step

  @property
  def final_round(self) -> bool:
    early = self.target is not None and self.step is not None and self.step < self.target
    return (self.target == self.max_steps or early) and not (self.cut and self.cut[0].fired)


def _export(estimator, spec: EvalSpec, results: dict, final: bool) -> list:
  """Runs `spec.exporters` (tf's Exporter.export arguments); their results."""
  out = []
  for exporter in spec.exporters:
    path = os.path.join(estimator.model_dir, 'export', exporter.name)
    out.append(exporter.export(estimator, path, estimator.latest_checkpoint(), results, final))
  return out


def _global_step(estimator) -> int:
  path = estimator.latest_checkpoint()
  return 0 if path is None else int(os.path.basename(path))


def train_and_evaluate(estimator, train_spec: TrainSpec, eval_spec,
                       restore_best: bool = False) -> tuple[Any, Any]:
  """Trains per `train_spec`, evaluating per `eval_spec` (one, a list, or a dict name ->
  EvalSpec); returns `(results, export results)` of the last evaluation — for several
  EvalSpecs, dicts keyed by name.

  `restore_best=True`: at the end, the best evaluated checkpoint (RunConfig's
  `keep_best_checkpoints`, `best_metric`, `best_mode`) becomes what
  `latest_checkpoint()`, evaluate and predict use (`Estimator.use_checkpoint`);
  the newer checkpoints stay on disk, and train() resumes from the newest.
  """
  if not isinstance(train_spec, TrainSpec):
    raise TypeError(f'train_spec must be a je.TrainSpec, got {type(train_spec).__name__}.')
  if restore_best and not estimator.config.keep_best_checkpoints:
    raise ValueError('train_and_evaluate(restore_best=True) needs the evaluations ranked: '
                     "set RunConfig(keep_best_checkpoints=k, best_metric='...', best_mode=...).")
  specs = _eval_specs(eval_spec)
  clock = _EvalClock(specs)
  cut = [_CutWhenEvalDue(clock, estimator.config.log_step_count_steps or 100)] if any(
      not s.every_n_steps for s in specs) else []
  results: dict = {}
  exports: dict = {}
  evaluated: dict[int, set] = {}
  step = _global_step(estimator)
  while True:
    target = clock.next_stop(step, train_spec.max_steps)
    estimator.train(train_spec.input_fn, max_steps=target,
                    hooks=[*train_spec.hooks, *cut, _Round(target, train_spec.max_steps, cut)],
                    saving_listeners=train_spec.saving_listeners)
    step, was_cut = _global_step(estimator), bool(cut and cut[0].fired)
    # Over at max_steps, or when the round ended early for another reason than a time
    # cut: the input ended, or a hook (early stopping) or a preemption notice stopped it.
    over = (train_spec.max_steps is not None and step >= train_spec.max_steps) or (
        not was_cut and (target is None or step < target))
    for spec in specs:
      if (over or clock.due(spec, step)) and step not in evaluated.setdefault(id(spec), set()):
        results[spec.name] = estimator.evaluate(spec.input_fn, steps=spec.steps,
                                                hooks=spec.hooks, name=spec.name)
        exports[spec.name] = _export(estimator, spec, results[spec.name], over)
        evaluated[id(spec)].add(step)
        clock.evaluated(spec)
    if over:
      break
  if restore_best and estimator.best_checkpoint() is not None:
    estimator.use_checkpoint(estimator.best_checkpoint())
  if len(specs) == 1:
    return results.get(specs[0].name), exports.get(specs[0].name, [])
  return results, exports
