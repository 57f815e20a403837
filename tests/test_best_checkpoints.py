"""Best checkpoints: the newest n, plus the k best evaluated, plus one per n hours stay.

Each test trains a real Estimator that saves every step, records scripted evaluation
metrics through `CheckpointStore.record_metrics` (as `evaluate` does), and asserts exactly
which `<model_dir>/<step>` directories remain.
"""

import datetime
import json
import math
import os

import numpy as np
import pytest

import jestimator as je
from jestimator.checkpoint import CheckpointStore
from jestimator.checkpoint_retention import METRICS_FILE, Retention, StepInfo
from models import make_data, mlp_model_fn

X, Y = make_data(64)


def input_fn():
  return [({'x': X[i:i + 16]}, Y[i:i + 16]) for i in range(0, 64, 16)] * 4


def eval_input_fn():
  return [({'x': X}, Y)]


def _estimator(model_dir, **config):
  config = je.RunConfig(save_checkpoints_steps=1, progress_bar=False, **config)
  return je.Estimator(mlp_model_fn, model_dir, config)


def _on_disk(model_dir):
  return sorted(int(name) for name in os.listdir(model_dir) if name.isdigit())


def _recorded(model_dir):
  with open(os.path.join(model_dir, METRICS_FILE), encoding='utf-8') as f:
    return {int(step): values for step, values in json.load(f)['metrics'].items()}


def _train_one_step(est, metric=None, value=None):
  """Trains (and saves) one step; records `metric = value` for it unless value is None."""
  est.train(input_fn, steps=1)
  store = est._checkpoints()
  step = store.latest_step()
  if value is not None:
    store.record_metrics(step, {metric: np.float32(value), 'global_step': np.int64(step)})
  return step


LOSSES = {1: 0.9, 2: 0.4, 3: 0.7, 4: 0.3, 5: 0.8, 6: 0.6}


@pytest.mark.parametrize('mode, after', [
    # min: 4 (0.3) and 2 (0.4) are best; 5 and 6 are the newest
    ('min', {3: [2, 3], 4: [2, 3, 4], 5: [2, 4, 5], 6: [2, 4, 5, 6]}),
    # max: 1 (0.9) and 5 (0.8) are best
    ('max', {3: [1, 2, 3], 4: [1, 3, 4], 5: [1, 4, 5], 6: [1, 5, 6]}),
])
def test_keeps_the_newest_and_the_best(model_dir, mode, after):
  est = _estimator(model_dir, keep_checkpoint_max=2, keep_best_checkpoints=2,
                   best_metric='loss', best_mode=mode)
  for step, loss in LOSSES.items():
    assert _train_one_step(est, 'loss', loss) == step
    if step in after:
      assert _on_disk(model_dir) == after[step], step
  assert est._checkpoints().best_step() == (4 if mode == 'min' else 1)
  assert sorted(_recorded(model_dir)) == after[6]  # deleted steps are forgotten
  assert _recorded(model_dir)[6] == {'loss': pytest.approx(0.6), 'global_step': 6.0}


def test_a_step_never_evaluated_is_neither_best_nor_worst(model_dir):
  est = _estimator(model_dir, keep_checkpoint_max=1, keep_best_checkpoints=2)
  _train_one_step(est)
  _train_one_step(est)
  assert _on_disk(model_dir) == [2]  # step 1 had no evaluation: a free best slot is not its
  est._checkpoints().record_metrics(2, {'loss': 0.5})
  _train_one_step(est)
  _train_one_step(est)
  assert _on_disk(model_dir) == [2, 4]  # 3 never evaluated: gone though a best slot is free
  est._checkpoints().record_metrics(4, {'loss': 0.9})
  assert _on_disk(model_dir) == [2, 4]
  _train_one_step(est, 'loss', 0.7)
  assert _on_disk(model_dir) == [2, 5]  # 4 (0.9) is now third best
  _train_one_step(est)
  assert _on_disk(model_dir) == [2, 5, 6]  # the unevaluated newest pushes out no best one


def test_ranking_survives_a_restart_and_training_resumes_from_the_newest(model_dir):
  config = dict(keep_checkpoint_max=1, keep_best_checkpoints=1)
  est = _estimator(model_dir, **config)
  for loss in (0.5, 0.2, 0.6):
    _train_one_step(est, 'loss', loss)
  assert _on_disk(model_dir) == [2, 3]

  est = _estimator(model_dir, **config)  # a new process: the ranking comes from disk
  assert est._checkpoints().best_step() == 2
  _train_one_step(est)
  _train_one_step(est)
  assert _on_disk(model_dir) == [2, 5]  # resumed from 3, not from the best step 2
  assert est.get_variable_value('global_step') == 5
  est._checkpoints().record_metrics(5, {'loss': 0.3})
  assert _on_disk(model_dir) == [2, 5] and est._checkpoints().best_step() == 2
  est._checkpoints().record_metrics(5, {'loss': 0.1})  # re-evaluated, now the best
  assert _on_disk(model_dir) == [5] and est._checkpoints().best_step() == 5


def test_evaluate_records_the_ranking_metric(model_dir):
  est = _estimator(model_dir, keep_checkpoint_max=1, keep_best_checkpoints=1,
                   best_metric='accuracy', best_mode='max')
  accuracy = {}
  for step in (1, 2, 3):
    est.train(input_fn, steps=1)
    results = est.evaluate(eval_input_fn, checkpoint_path=est.latest_checkpoint())
    assert results['global_step'] == step
    accuracy[step] = float(results['accuracy'])
  best = max(accuracy, key=lambda s: (accuracy[s], s))
  assert _on_disk(model_dir) == sorted({best, 3})
  assert est._checkpoints().best_step() == best
  assert _recorded(model_dir)[best]['accuracy'] == pytest.approx(accuracy[best])


def test_a_misspelled_best_metric_names_the_metrics_there_are(model_dir):
  est = _estimator(model_dir, keep_checkpoint_max=1)
  est.train(input_fn, steps=1)
  results = est.evaluate(eval_input_fn, checkpoint_path=est.latest_checkpoint())
  store = CheckpointStore(model_dir, 1, keep_best=2, best_metric='acc')
  with pytest.raises(ValueError, match=r"best_metric 'acc' \(RunConfig.best_metric\) is not a "
                                       r'scalar evaluation metric of step 1.*the metrics are: '
                                       r'accuracy, global_step, loss\.'):
    store.record_metrics(1, results)
  assert not os.path.exists(os.path.join(model_dir, METRICS_FILE))  # nothing recorded
  # Without keep_best_checkpoints the metrics are recorded, and asking for the best says why
  # there is none.
  store = CheckpointStore(model_dir, 1, best_metric='acc')
  store.record_metrics(1, results)
  with pytest.raises(ValueError, match="best_metric 'acc'.*accuracy, global_step, loss"):
    store.best_step()
  # Through evaluate(), as a RunConfig typo meets it.
  est = _estimator(model_dir, keep_checkpoint_max=1, keep_best_checkpoints=2,
                   best_metric='acc')
  with pytest.raises(ValueError, match="best_metric 'acc'.*accuracy.*global_step.*loss"):
    est.evaluate(eval_input_fn, checkpoint_path=est.latest_checkpoint())


def test_an_evaluator_beside_the_trainer_records_and_the_trainer_deletes(model_dir):
  est = _estimator(model_dir, keep_checkpoint_max=1, keep_best_checkpoints=1)
  _train_one_step(est, 'loss', 0.5)
  _train_one_step(est)
  reader = CheckpointStore(model_dir, 1, keep_best=1)  # has saved nothing: only records
  reader.record_metrics(2, {'loss': 0.1})
  assert _on_disk(model_dir) == [1, 2]  # 1 is no longer best, but a reader deletes nothing
  _train_one_step(est)
  assert _on_disk(model_dir) == [2, 3]  # the trainer read the record at its save


def _set_commit_time(model_dir, step, when):
  """The patched clock: rewrites the commit time orbax recorded for `step`."""
  path = os.path.join(model_dir, str(step), '_CHECKPOINT_METADATA')
  with open(path, encoding='utf-8') as f:
    meta = json.load(f)
  meta['commit_timestamp_nsecs'] = int(when.timestamp() * 1e9)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(meta, f)


def test_one_checkpoint_per_n_hours_stays(model_dir):
  # Steps 1-6 committed at these hours; each new step is saved now, 10 hours later.
  hours = {1: 0.0, 2: 0.4, 3: 1.1, 4: 1.5, 5: 2.05, 6: 2.2}
  start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=10)
  est = _estimator(model_dir, keep_checkpoint_max=1, keep_checkpoint_every_n_hours=1.0)
  for step, hour in hours.items():
    assert _train_one_step(est) == step
    _set_commit_time(model_dir, step, start + datetime.timedelta(hours=hour))
  # 1 is the oldest; 3 is >= 1 h after 1; 2 (0.4 h), 4 (0.4 h after 3) and 5 (0.95 h after
  # 3) fell within the hour; 6 is the newest.
  assert _on_disk(model_dir) == [1, 3, 6]
  _train_one_step(est)
  assert _on_disk(model_dir) == [1, 3, 6, 7]  # 6 stays: 1.1 h after 3
  # Recording an evaluation applies the rule to the commit times on disk.
  _set_commit_time(model_dir, 6, start + datetime.timedelta(hours=2.0))
  _set_commit_time(model_dir, 7, start + datetime.timedelta(hours=2.5))
  est._checkpoints().record_metrics(7, {'loss': 0.5})
  assert _on_disk(model_dir) == [1, 3, 7]  # 6 is now 0.9 h after 3, 7 1.4 h


# -- the rules alone, without an Estimator ---------------------------------------------------

def _infos(*steps):
  return [StepInfo(s, datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc))
          for s in steps]


def test_nan_ranks_worst_and_a_tie_goes_to_the_newer_step(tmp_path):
  retention = Retention(str(tmp_path), keep=1, keep_best=2, metric='loss', mode='min')
  retention.record.update({1: {'loss': math.nan}, 2: {'loss': 0.25}, 3: {'loss': 0.5},
                           4: {'loss': 0.25}, 5: {'loss': 0.75}})
  assert retention.ranked([1, 2, 3, 4, 5, 6]) == [4, 2, 3, 5, 1]
  assert retention.doomed(_infos(1, 2, 3, 4, 5, 6)) == [1, 3, 5]
  retention = Retention(str(tmp_path), keep=1, keep_best=1, metric='loss', mode='max')
  assert retention.ranked([1, 2, 3, 4, 5]) == [5, 3, 4, 2, 1]
  assert retention.doomed(_infos(1, 2, 3, 4, 5)) == [1, 2, 3, 4]


def test_keep_checkpoint_max_none_keeps_every_step(tmp_path):
  retention = Retention(str(tmp_path), keep=None, keep_best=1, metric='loss')
  retention.record.update({1: {'loss': 0.5}, 2: {'loss': 0.25}})
  assert retention.doomed(_infos(1, 2, 3)) == []
  assert Retention(str(tmp_path), keep=2, keep_best=1).doomed(_infos(1, 2, 3, 4)) == [1]


def test_a_damaged_metrics_file_is_named(tmp_path):
  (tmp_path / METRICS_FILE).write_text('{"format": 1, "metrics": {"3": ')
  retention = Retention(str(tmp_path), keep=1, keep_best=1)
  with pytest.raises(ValueError, match=rf'{METRICS_FILE} could not be read \(JSONDecodeError'):
    retention.best([3])
