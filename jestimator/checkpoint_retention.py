"""Which checkpoints a model_dir keeps, and the evaluation metrics that rank them.

A finished step stays while any of these rules keeps it (RunConfig fields in brackets):

  newest  the newest n steps (keep_checkpoint_max; None keeps all)
  best    the k best evaluated steps by one scalar metric (keep_best_checkpoints,
          best_metric, best_mode); NaN ranks worst, of equal values the newer step ranks
          better. A step never evaluated is neither best nor worst: only `newest` keeps it.
  hourly  the oldest step, then each first step at least n hours after the last one it
          kept (keep_checkpoint_every_n_hours), by the commit times orbax records
Every other step is deleted.

The rules are orbax preservation policies (`LatestN`, `EveryNSeconds` and `_BestEvaluated`
below, joined by `AnyPreservationPolicy`) handed to the CheckpointManager, which applies
them at every save and deletes on the primary process only. orbax's own `BestN` (`best_fn`)
cannot rank ours: orbax takes metrics only with the save (`CheckpointManager.save(metrics=)`,
stored inside the step directory), while a step is evaluated after it is saved, and a
finished step is immutable (rewriting it would also defeat `restore_for_inference`'s cache,
keyed by the step directory's mtime). BestN also keeps unevaluated steps while there are at
most k steps, and NaN breaks its sort. So the metrics live beside the steps, in
`<model_dir>/checkpoint_metrics.json` (step -> scalar metrics), replaced atomically by
process 0; a restart reads them back and continues the ranking. After a recorded
evaluation the store that saves applies the same policy itself (`doomed`,
`CheckpointStore.record_metrics`); a store that only reads, such as an evaluator job
beside the trainer, records but never deletes.

`hourly` differs from tf.estimator in one point: tf counts the first n hours from the start
of training, this counts from the oldest checkpoint, which is therefore kept as well. It is
derived from the steps on disk alone, so a restart neither resets nor forgets it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

METRICS_FILE = 'checkpoint_metrics.json'
_FORMAT = 1
_policies = ocp.checkpoint_managers


@dataclasses.dataclass(frozen=True)
class StepInfo:
  """A finished step as orbax's preservation policies see it (`PolicyCheckpointInfo`)."""
  step: int
  time: datetime.datetime
  metrics: dict | None = None


def finished_steps(directory: str) -> list[StepInfo]:
  """The finished steps in `directory`, oldest first, with their commit times."""
  found = ocp.path.step.standard_name_format().find_all(epath.Path(directory))
  return sorted((StepInfo(m.step, m.commit_timestamp) for m in found), key=lambda i: i.step)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
  """The numeric scalars of `metrics` as floats (arrays, e.g. a confusion matrix, do not
  rank and are left out)."""
  out = {}
  for name, value in metrics.items():
    value = np.asarray(value)
    if value.ndim == 0 and np.issubdtype(value.dtype, np.number):
      out[str(name)] = float(value)
  return out


def _missing(metric: str, step: int, names) -> ValueError:
  return ValueError(
      f'best_metric {metric!r} (RunConfig.best_metric) is not a scalar evaluation metric of '
      f'step {step}, so the best checkpoints cannot be ranked by it; the metrics are: '
      f'{", ".join(sorted(names)) or "(none)"}. Set RunConfig.best_metric to one of them.')


class MetricsRecord:
  """step -> scalar evaluation metrics, kept in `<model_dir>/checkpoint_metrics.json`.

  Read lazily (a store that only restores never opens it) and again whenever the file
  changed (an evaluator job beside the trainer records into it too). Every process holds
  the same copy, since all of them record the same metrics; process 0 writes it.
  """

  def __init__(self, directory: str):
    self.path = os.path.join(directory, METRICS_FILE)
    self._steps: dict[int, dict[str, float]] = {}
    self._stamp: Any = None  # (mtime, size) of the file as last read or written

  def _stat(self) -> Any:
    try:
      stat = os.stat(self.path)
    except FileNotFoundError:
      return 'absent'
    return stat.st_mtime_ns, stat.st_size

  def steps(self) -> dict[int, dict[str, float]]:
    stamp = self._stat()
    if stamp != self._stamp:
      self._steps, self._stamp = self._read(), stamp
    return self._steps

  def _read(self) -> dict[int, dict[str, float]]:
    try:
      with open(self.path, encoding='utf-8') as f:
        data = json.load(f)
      return {int(step): dict(values) for step, values in data['metrics'].items()}
    except FileNotFoundError:
      return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(
          f'{self.path} could not be read ({type(e).__name__}: {e}). It holds the '
          'evaluation metrics that rank the best checkpoints (keep_best_checkpoints); repair '
          'it, or delete it to forget them (the best checkpoints beyond the newest are then '
          'deleted at the next save).') from e

  def update(self, add: Mapping[int, dict[str, float]] | None = None,
             forget: Iterable[int] = ()) -> None:
    """Records `add`'s steps and forgets the steps in `forget`."""
    steps = {**self.steps(), **(add or {})}
    for step in forget:
      steps.pop(step, None)
    if steps == self._steps:
      return
    self._steps = steps
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(self.path), exist_ok=True)
      text = json.dumps({'format': _FORMAT,
                         'metrics': {str(s): steps[s] for s in sorted(steps)}}, indent=1)
      tmp = f'{self.path}.tmp{os.getpid()}'
      with open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.path)
      self._stamp = self._stat()


@dataclasses.dataclass
class _BestEvaluated(_policies.PreservationPolicy):
  """Preserves the `n` best evaluated steps, as `ranked` orders them (best first)."""
  n: int
  ranked: Callable[[list[int]], list[int]]

  def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> list[bool]:
    del context
    best = set(self.ranked([c.step for c in checkpoints])[:self.n])
    return [c.step in best for c in checkpoints]


class Retention:
  """The retention rules of one model_dir and the metrics they rank by.

  `policy` goes into `CheckpointManagerOptions(preservation_policy=)`; `doomed` applies it
  outside a save (after an evaluation is recorded).
  """

  def __init__(self, directory: str, keep: int | None, keep_best: int | None = None,
               metric: str = 'loss', mode: str = 'min', every_n_hours: float | None = None):
    if mode not in ('min', 'max'):
      raise ValueError(f"RunConfig: best_mode must be 'min' or 'max', got {mode!r}.")
    if every_n_hours is not None and not (isinstance(every_n_hours, (int, float))
                                          and every_n_hours > 0):
      raise ValueError('RunConfig: keep_checkpoint_every_n_hours must be a positive number or '
                       f'None, got {every_n_hours!r}.')
    self.keep_best, self.metric, self.mode = keep_best, metric, mode
    self.record = MetricsRecord(directory)
    policies = [_policies.LatestN(keep)]
    if keep_best:
      policies.append(_BestEvaluated(keep_best, self.ranked))
    if every_n_hours:
      policies.append(_policies.EveryNSeconds(interval_secs=every_n_hours * 3600))
    self.policy = _policies.AnyPreservationPolicy(policies)

  def scalars(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of `step`'s evaluation `metrics`. Raises ValueError when best checkpoints
    are kept and `best_metric` is not among them (a typo would rank nothing)."""
    scalars = scalar_metrics(metrics)
    if self.keep_best and self.metric not in scalars:
      raise _missing(self.metric, step, scalars)
    return scalars

  def ranked(self, steps: Sequence[int]) -> list[int]:
    """The evaluated ones of `steps`, best first."""
    recorded = self.record.steps()

    def badness(value):
      return math.inf if math.isnan(value) else value if self.mode == 'min' else -value

    keyed = sorted((badness(recorded[s][self.metric]), -s) for s in steps
                   if self.metric in recorded.get(s, {}))
    return [-negated for _, negated in keyed]

  def best(self, steps: Sequence[int]) -> int | None:
    """The best evaluated one of `steps`; None if none was evaluated. Raises ValueError if
    some were evaluated but none has `best_metric`."""
    ranked = self.ranked(steps)
    if ranked:
      return ranked[0]
    recorded = self.record.steps()
    evaluated = [s for s in steps if s in recorded]
    if evaluated:
      raise _missing(self.metric, evaluated[-1], recorded[evaluated[-1]])
    return None

  def doomed(self, checkpoints: Sequence[StepInfo]) -> list[int]:
    """The steps of `checkpoints` (oldest first) that no rule keeps; never the newest."""
    keep = self.policy.should_preserve(checkpoints,
                                       context=_policies.PreservationContext())
    return [c.step for c, k in zip(checkpoints[:-1], keep) if not k]
