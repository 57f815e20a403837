"""Exporters for `EvalSpec(exporters=...)`: which evaluated checkpoints become SavedModels.

tf.estimator's three, with its arguments and semantics. After each evaluation
`train_and_evaluate` calls `exporter.export(estimator, export_path,
checkpoint_path, eval_result, is_the_final_export)` with export_path
`model_dir/export/<name>`; each exporter writes through
`Estimator.export_saved_model`, one timestamped (all-digit) directory per
export, which TF Serving picks up as model versions:

  LatestExporter  after every evaluation; keeps the newest `exports_to_keep`
  BestExporter    when `compare_fn` finds the evaluation better than the best so
                  far (default: smaller loss); keeps the newest `exports_to_keep`
  FinalExporter   once, after the final evaluation

BestExporter's "best so far" survives restarts, which tf's did not (it read
only tf1 `simple_value` summaries, and TF2 writes tensors, so a restarted job
exported its first evaluation whatever it scored). It is kept in
`export_path/best_eval_result.json`, rewritten after each best export: the
scalars of the evaluation last exported. A job that finds no such file (its
first export, or exports made before this file existed) starts from the best
evaluation in `event_file_pattern`'s event files, read with TensorBoard's
reader (tensor and simple_value summaries alike), the evaluation being
exported left out. The file wins over the events: it says what was exported,
while the events also hold evaluations whose export never finished.
"""

from __future__ import annotations

import abc
import glob
import inspect
import json
import os
import shutil
from typing import Any, Callable

import jax

from jestimator import summary
from jestimator.reporting import logger

BEST_EVAL_RESULT_FILE = 'best_eval_result.json'


class Exporter(abc.ABC):
  """One flavour of model export; `train_and_evaluate` calls `export` after evaluations."""

  @property
  @abc.abstractmethod
  def name(self) -> str:
    """The directory under `model_dir/export` where this exporter's exports go."""

  @abc.abstractmethod
  def export(self, estimator, export_path: str, checkpoint_path: str | None,
             eval_result: dict, is_the_final_export: bool) -> str | None:
    """Exports `checkpoint_path` (evaluated as `eval_result`) under `export_path`.

    `is_the_final_export` is True for the evaluation that ends training.
    Returns the export's directory, or None when this exporter skips it.
    """


def _check_name(name: Any) -> str:
  if not isinstance(name, str) or not name or os.sep in name or name in ('.', '..'):
    raise ValueError(f'Exporter name must be a non-empty directory name (it becomes '
                     f'model_dir/export/<name>), got {name!r}.')
  return name


def _check_keep(exports_to_keep: Any) -> int | None:
  if exports_to_keep is not None and (not isinstance(exports_to_keep, int)
                                      or isinstance(exports_to_keep, bool)
                                      or exports_to_keep <= 0):
    raise ValueError(f'exports_to_keep, if given, must be a positive int (None keeps every '
                     f'export), got {exports_to_keep!r}.')
  return exports_to_keep


def export_versions(export_path: str) -> list[str]:
  """The export directories under `export_path` (all-digit names), oldest first."""
  if not os.path.isdir(export_path):
    return []
  names = [n for n in os.listdir(export_path)
           if n.isdigit() and os.path.isdir(os.path.join(export_path, n))]
  return [os.path.join(export_path, n) for n in sorted(names, key=int)]


def garbage_collect_exports(export_path: str, exports_to_keep: int | None) -> list[str]:
  """Deletes all but the newest `exports_to_keep` exports under `export_path` (None: none);
  returns the deleted paths. Only process 0 deletes."""
  if exports_to_keep is None or jax.process_index() != 0:
    return []
  doomed = export_versions(export_path)[:-exports_to_keep]
  for path in doomed:
    try:
      shutil.rmtree(path)
    except FileNotFoundError as e:
      logger.warning('Can not delete %s recursively: %s', path, e)
  if doomed:
    logger.info('Deleted the older exports %s (keeping %d).',
                [os.path.basename(p) for p in doomed], exports_to_keep)
  return doomed


class _SavedModelExporter(Exporter):
  """Exports through `Estimator.export_saved_model`; the base of the three exporters."""

  def __init__(self, name: str, serving_input_receiver_fn: Callable | None,
               assets_extra: dict | None = None, as_text: bool = False):
    self._name = _check_name(name)
    self._serving_input_receiver_fn = serving_input_receiver_fn
    self._assets_extra = assets_extra
    self._as_text = as_text

  @property
  def name(self) -> str:
    return self._name

  def _save(self, estimator, export_path: str, checkpoint_path: str | None) -> str:
    return estimator.export_saved_model(
        export_path, self._serving_input_receiver_fn, assets_extra=self._assets_extra,
        as_text=self._as_text, checkpoint_path=checkpoint_path)

  def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
    del eval_result, is_the_final_export
    return self._save(estimator, export_path, checkpoint_path)


class LatestExporter(_SavedModelExporter):
  """Exports after every evaluation; keeps the newest `exports_to_keep` exports (None:
  all)."""

  def __init__(self, name: str, serving_input_receiver_fn: Callable,
               assets_extra: dict | None = None, as_text: bool = False,
               exports_to_keep: int | None = 5):
    super().__init__(name, serving_input_receiver_fn, assets_extra, as_text)
    self._exports_to_keep = _check_keep(exports_to_keep)

  def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
    path = self._save(estimator, export_path, checkpoint_path)
    garbage_collect_exports(export_path, self._exports_to_keep)
    return path


class FinalExporter(_SavedModelExporter):
  """Exports once, after the evaluation that ends training (`is_the_final_export`)."""

  def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
    if not is_the_final_export:
      return None
    logger.info('Performing the final export in the end of training.')
    return self._save(estimator, export_path, checkpoint_path)


def _loss_smaller(best_eval_result: dict, current_eval_result: dict) -> bool:
  """True if `current_eval_result['loss']` is smaller than `best_eval_result['loss']`."""
  if not best_eval_result or 'loss' not in best_eval_result:
    raise ValueError('best_eval_result cannot be empty or no loss is found in it.')
  if not current_eval_result or 'loss' not in current_eval_result:
    raise ValueError('current_eval_result cannot be empty or no loss is found in it.')
  return best_eval_result['loss'] > current_eval_result['loss']


def _check_compare_fn(compare_fn: Callable) -> Callable:
  if compare_fn is None:
    raise ValueError('`compare_fn` must not be None.')
  args = set(inspect.signature(compare_fn).parameters)
  for needed in ('best_eval_result', 'current_eval_result'):
    if needed not in args:
      raise ValueError(f'compare_fn ({compare_fn}) must include {needed} argument.')
  others = sorted(args - {'best_eval_result', 'current_eval_result'})
  if others:
    raise ValueError(f'compare_fn ({compare_fn}) has following not expected args: {others}')
  return compare_fn


class BestExporter(_SavedModelExporter):
  """Exports when an evaluation is better than every one before (by `compare_fn`).

  Args:
    name: the directory under `model_dir/export`.
    serving_input_receiver_fn: the receiver of the exported SavedModels.
    event_file_pattern: eval event files, relative to model_dir, to find the best
      evaluation so far when `best_eval_result.json` is missing (None: start
      afresh then). Use 'eval_<name>/*.tfevents.*' for a named EvalSpec.
    compare_fn: `compare_fn(best_eval_result, current_eval_result) -> bool`,
      True when the current evaluation is better; default: smaller `loss`.
    assets_extra, as_text: passed to `export_saved_model`.
    exports_to_keep: the newest exports kept (each better than the one before);
      None keeps all.
  """

  def __init__(self, name: str = 'best_exporter', serving_input_receiver_fn: Callable | None = None,
               event_file_pattern: str | None = 'eval/*.tfevents.*',
               compare_fn: Callable = _loss_smaller, assets_extra: dict | None = None,
               as_text: bool = False, exports_to_keep: int | None = 5):
    super().__init__(name, serving_input_receiver_fn, assets_extra, as_text)
    self._compare_fn = _check_compare_fn(compare_fn)
    self._event_file_pattern = event_file_pattern
    self._exports_to_keep = _check_keep(exports_to_keep)
    self._loaded_for: tuple[str, str] | None = None  # (model_dir, export_path) of _best
    self._best: dict | None = None

  def _better(self, best: dict | None, current: dict) -> bool:
    return best is None or bool(self._compare_fn(best_eval_result=best,
                                                 current_eval_result=current))

  def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
    if self._loaded_for != (estimator.model_dir, export_path):
      self._best = self._best_so_far(estimator.model_dir, export_path,
                                     _step_of(eval_result))
      self._loaded_for = (estimator.model_dir, export_path)
    if not self._better(self._best, eval_result):
      return None
    logger.info('Performing best model export.')
    path = self._save(estimator, export_path, checkpoint_path)
    self._best = eval_result
    _write_best(export_path, eval_result, path, checkpoint_path)
    garbage_collect_exports(export_path, self._exports_to_keep)
    return path

  def _best_so_far(self, model_dir: str, export_path: str, step: int | None) -> dict | None:
    """The recorded best export's evaluation, else the best evaluation in the event files
    other than the one at `step` (the evaluation being exported), else None."""
    recorded = read_best_eval_result(export_path)
    if recorded is not None:
      logger.info('Loaded the best evaluation so far from %s: %s.',
                  os.path.join(export_path, BEST_EVAL_RESULT_FILE), recorded)
      return recorded
    if not self._event_file_pattern:
      return None
    best = None
    for result in _eval_results(os.path.join(model_dir, self._event_file_pattern)):
      if result['global_step'] != step and self._better(best, result):
        best = result
    if best is not None:
      logger.info('Loaded the best evaluation so far from the event files: %s.', best)
    return best


def _step_of(eval_result: dict) -> int | None:
  step = eval_result.get('global_step') if eval_result else None
  return None if step is None else int(step)


def _eval_results(pattern: str) -> list[dict]:
  """Every evaluation in the event files matching `pattern`: {tag: value, 'global_step':
  step}, per directory, in step order."""
  results = []
  for logdir in sorted({os.path.dirname(f) for f in glob.glob(pattern)}):
    by_step: dict[int, dict] = {}
    for tag, points in summary.read_scalars(logdir).items():
      for step, value in points:
        by_step.setdefault(step, {})[tag] = value
    results += [{**values, 'global_step': step} for step, values in sorted(by_step.items())]
  return results


def read_best_eval_result(export_path: str) -> dict | None:
  """The evaluation of a BestExporter's last export under `export_path`, or None."""
  path = os.path.join(export_path, BEST_EVAL_RESULT_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)['eval_result']


def _write_best(export_path: str, eval_result: dict, export: str | None,
                checkpoint_path: str | None) -> None:
  """Records the exported evaluation's scalars (process 0; written whole, then renamed)."""
  if jax.process_index() != 0:
    return
  scalars = summary.numeric_scalars(eval_result)
  if 'global_step' in eval_result:
    scalars['global_step'] = int(eval_result['global_step'])
  record = {'eval_result': scalars, 'export': export, 'checkpoint_path': checkpoint_path}
  os.makedirs(export_path, exist_ok=True)
  path = os.path.join(export_path, BEST_EVAL_RESULT_FILE)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=1)
  os.replace(path + '.tmp', path)
