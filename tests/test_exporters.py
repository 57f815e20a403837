"""Exporters (tf.estimator's semantics): LatestExporter after every evaluation, FinalExporter
once at the end, BestExporter when the loss is smaller than every loss before, its best
surviving restarts (a new exporter object reads the record or the eval event files);
exports_to_keep deletes the oldest exports."""

import os

import numpy as np
import pytest
import tensorflow as tf

import jestimator as je
from jestimator import summary
from jestimator.export.exporters import (BestExporter, Exporter, FinalExporter, LatestExporter,
                                         export_versions, read_best_eval_result)
from models import make_data, mlp_model_fn


def receiver_fn():
  raise AssertionError('the fake export_saved_model does not call the receiver')


class FakeEstimator:
  """What exporters use of an Estimator: model_dir and export_saved_model, here writing an
  all-digit directory per export holding the checkpoint path it was given."""

  def __init__(self, model_dir, fail=False):
    self.model_dir = str(model_dir)
    self.fail = fail
    self.calls = []

  def export_saved_model(self, export_dir_base, serving_input_receiver_fn, assets_extra=None,
                         as_text=False, checkpoint_path=None):
    self.calls.append((export_dir_base, serving_input_receiver_fn, assets_extra, as_text))
    if self.fail:
      raise OSError(28, 'No space left on device')
    return fake_export(export_dir_base, checkpoint_path)


def fake_export(export_dir_base, checkpoint_path):
  """A timestamp-named export: one more than the newest under the base."""
  versions = export_versions(export_dir_base)
  name = str(int(os.path.basename(versions[-1])) + 1 if versions else 1700000000)
  os.makedirs(os.path.join(export_dir_base, name))
  with open(os.path.join(export_dir_base, name, 'checkpoint'), 'w', encoding='utf-8') as f:
    f.write(str(checkpoint_path))
  return os.path.join(export_dir_base, name)


def checkpoint_of(export):
  with open(os.path.join(export, 'checkpoint'), encoding='utf-8') as f:
    return f.read()


def exported_checkpoints(export_path):
  """The checkpoint of each export still on disk, oldest first."""
  return [checkpoint_of(path) for path in export_versions(str(export_path))]


def evaluate_and_export(exporter, est, step, loss, final=False, write_events=True):
  """What train_and_evaluate does at `step`: record the evaluation, then export."""
  result = {'loss': np.float32(loss), 'accuracy': np.float32(1 - loss),
            'global_step': np.int64(step)}
  if write_events:
    summary.write_eval_results(est.model_dir, 'eval', step, result)
  export_path = os.path.join(est.model_dir, 'export', exporter.name)
  return exporter.export(est, export_path, f'ckpt-{step}', result, final)


def test_best_exporter_exports_only_strictly_smaller_losses(tmp_path):
  est, best = FakeEstimator(tmp_path), BestExporter(serving_input_receiver_fn=receiver_fn)
  losses = {1: 0.9, 2: 0.7, 3: 0.8, 4: 0.6, 5: 0.6, 6: 0.65}
  results = [evaluate_and_export(best, est, step, loss) for step, loss in losses.items()]
  assert [r is not None for r in results] == [True, True, False, True, False, False]
  assert exported_checkpoints(tmp_path / 'export' / 'best_exporter') == [
      'ckpt-1', 'ckpt-2', 'ckpt-4']
  assert est.calls[0] == (str(tmp_path / 'export' / 'best_exporter'), receiver_fn, None, False)
  recorded = read_best_eval_result(str(tmp_path / 'export' / 'best_exporter'))
  assert recorded['global_step'] == 4 and recorded['loss'] == pytest.approx(0.6)


def test_best_exporter_keeps_its_best_across_a_restart(tmp_path):
  est = FakeEstimator(tmp_path)
  first = BestExporter(serving_input_receiver_fn=receiver_fn, exports_to_keep=None)
  for step, loss in [(1, 0.9), (2, 0.5), (3, 0.6)]:
    evaluate_and_export(first, est, step, loss)
  again = BestExporter(serving_input_receiver_fn=receiver_fn, exports_to_keep=None)  # restart
  assert evaluate_and_export(again, FakeEstimator(tmp_path), 4, 0.7) is None  # 0.7 > 0.5
  assert evaluate_and_export(again, FakeEstimator(tmp_path), 5, 0.4) is not None
  assert exported_checkpoints(tmp_path / 'export' / 'best_exporter') == [
      'ckpt-1', 'ckpt-2', 'ckpt-5']


def test_without_a_record_the_best_comes_from_the_eval_event_files(tmp_path):
  est = FakeEstimator(tmp_path)
  for step, loss in [(1, 0.9), (2, 0.5), (3, 0.6)]:  # evaluated before any exporter ran
    summary.write_eval_results(est.model_dir, 'eval', step, {'loss': loss})
  best = BestExporter(serving_input_receiver_fn=receiver_fn)
  assert evaluate_and_export(best, est, 4, 0.55) is None  # not better than step 2's 0.5
  assert evaluate_and_export(best, est, 5, 0.45) is not None
  assert exported_checkpoints(tmp_path / 'export' / 'best_exporter') == ['ckpt-5']


def test_the_evaluation_being_exported_is_not_its_own_rival(tmp_path):
  est = FakeEstimator(tmp_path)
  summary.write_eval_results(est.model_dir, 'eval', 1, {'loss': 0.9})
  best = BestExporter(serving_input_receiver_fn=receiver_fn)
  # Step 2's events are written before its export (train_and_evaluate's order): still best.
  assert evaluate_and_export(best, est, 2, 0.5) is not None


def test_event_file_pattern_none_starts_afresh(tmp_path):
  est = FakeEstimator(tmp_path)
  summary.write_eval_results(est.model_dir, 'eval', 1, {'loss': 0.1})
  best = BestExporter(serving_input_receiver_fn=receiver_fn, event_file_pattern=None)
  assert evaluate_and_export(best, est, 2, 0.5) is not None


def test_a_named_eval_specs_events_are_found_with_its_pattern(tmp_path):
  est = FakeEstimator(tmp_path)
  summary.write_eval_results(est.model_dir, 'eval_holdout', 1, {'loss': 0.3})
  summary.write_eval_results(est.model_dir, 'eval', 1, {'loss': 0.9})
  best = BestExporter(serving_input_receiver_fn=receiver_fn,
                      event_file_pattern='eval_holdout/*.tfevents.*')
  assert evaluate_and_export(best, est, 2, 0.5, write_events=False) is None  # 0.5 > 0.3


def test_a_custom_compare_fn_ranks_by_accuracy(tmp_path):
  def accuracy_larger(best_eval_result, current_eval_result):
    return current_eval_result['accuracy'] > best_eval_result['accuracy']

  est = FakeEstimator(tmp_path)
  best = BestExporter(serving_input_receiver_fn=receiver_fn, compare_fn=accuracy_larger)
  exported = [evaluate_and_export(best, est, s, loss) is not None
              for s, loss in [(1, 0.5), (2, 0.3), (3, 0.4), (4, 0.2)]]  # accuracy = 1 - loss
  assert exported == [True, True, False, True]


@pytest.mark.parametrize('compare_fn, message', [
    (None, 'must not be None'),
    (lambda a, b: True, 'must include best_eval_result'),
    (lambda best_eval_result, current_eval_result, x: True, r"not expected args: \['x'\]"),
])
def test_compare_fn_needs_tfs_argument_names(compare_fn, message):
  with pytest.raises(ValueError, match=message):
    BestExporter(serving_input_receiver_fn=receiver_fn, compare_fn=compare_fn)


def test_the_default_compare_fn_needs_a_loss(tmp_path):
  best = BestExporter(serving_input_receiver_fn=receiver_fn)
  evaluate_and_export(best, FakeEstimator(tmp_path), 1, 0.5)
  with pytest.raises(ValueError, match='no loss is found'):
    best.export(FakeEstimator(tmp_path), str(tmp_path / 'export' / 'best_exporter'), 'ckpt-2',
                {'accuracy': 0.9, 'global_step': 2}, False)


def test_a_failed_best_export_is_not_remembered_as_the_best(tmp_path):
  best = BestExporter(serving_input_receiver_fn=receiver_fn)
  evaluate_and_export(best, FakeEstimator(tmp_path), 1, 0.9)
  with pytest.raises(OSError):
    evaluate_and_export(best, FakeEstimator(tmp_path, fail=True), 2, 0.5)
  assert evaluate_and_export(best, FakeEstimator(tmp_path), 3, 0.6) is not None  # 0.6 < 0.9
  recorded = read_best_eval_result(str(tmp_path / 'export' / 'best_exporter'))
  assert recorded['global_step'] == 3


def test_best_exporter_keeps_the_newest_exports_to_keep(tmp_path):
  est, best = FakeEstimator(tmp_path), BestExporter(serving_input_receiver_fn=receiver_fn,
                                                    exports_to_keep=2)
  for step, loss in enumerate([0.9, 0.8, 0.85, 0.7, 0.6], start=1):
    evaluate_and_export(best, est, step, loss)
  assert exported_checkpoints(tmp_path / 'export' / 'best_exporter') == ['ckpt-4', 'ckpt-5']
  assert os.path.isfile(tmp_path / 'export' / 'best_exporter' / 'best_eval_result.json')


def test_latest_exporter_exports_every_evaluation_and_keeps_the_newest(tmp_path):
  est = FakeEstimator(tmp_path)
  latest = LatestExporter('latest', receiver_fn, assets_extra={'a.txt': '/x'}, as_text=True,
                          exports_to_keep=3)
  paths = [evaluate_and_export(latest, est, step, 0.5) for step in range(1, 6)]
  assert all(paths)
  assert exported_checkpoints(tmp_path / 'export' / 'latest') == ['ckpt-3', 'ckpt-4', 'ckpt-5']
  assert est.calls[-1][2:] == ({'a.txt': '/x'}, True)
  os.makedirs(tmp_path / 'export' / 'latest' / 'not_an_export')  # left alone by the cleanup
  evaluate_and_export(latest, est, 6, 0.5)
  assert exported_checkpoints(tmp_path / 'export' / 'latest') == ['ckpt-4', 'ckpt-5', 'ckpt-6']
  assert os.path.isdir(tmp_path / 'export' / 'latest' / 'not_an_export')


def test_final_exporter_exports_only_the_final_evaluation(tmp_path):
  est, final = FakeEstimator(tmp_path), FinalExporter('final', receiver_fn)
  assert evaluate_and_export(final, est, 1, 0.5) is None
  assert evaluate_and_export(final, est, 2, 0.4, final=True) is not None
  assert exported_checkpoints(tmp_path / 'export' / 'final') == ['ckpt-2']


@pytest.mark.parametrize('make, message', [
    (lambda: LatestExporter('latest', receiver_fn, exports_to_keep=0), 'positive int'),
    (lambda: BestExporter(serving_input_receiver_fn=receiver_fn, exports_to_keep=-1),
     'positive int'),
    (lambda: FinalExporter('', receiver_fn), 'non-empty directory name'),
    (lambda: LatestExporter('a/b', receiver_fn), 'non-empty directory name'),
])
def test_bad_exporter_arguments_are_named(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_exporters_are_exporters():
  for exporter in (LatestExporter('l', receiver_fn), FinalExporter('f', receiver_fn),
                   BestExporter(serving_input_receiver_fn=receiver_fn)):
    assert isinstance(exporter, Exporter)
  with pytest.raises(TypeError):
    Exporter()  # pylint: disable=abstract-class-instantiated


# -- through train_and_evaluate, with a real Estimator ----------------------------------------

X, Y = make_data(256)
TRAIN = je.inputs.numpy_input_fn({'x': X}, Y, batch_size=32, shuffle=True, num_epochs=None,
                                 seed=1)
EVAL = je.inputs.numpy_input_fn({'x': X[:96]}, Y[:96], batch_size=32, shuffle=False)


def _estimator(model_dir, learning_rate):
  est = je.Estimator(mlp_model_fn, str(model_dir),
                     je.RunConfig(save_checkpoints_steps=1000, keep_checkpoint_max=None,
                                  save_summary_steps=None),
                     {'hidden': 8, 'learning_rate': learning_rate})
  est.export_saved_model = lambda base, fn, assets_extra=None, as_text=False, \
      checkpoint_path=None: fake_export(base, checkpoint_path)
  return est


def _exporters():
  return [LatestExporter('latest', receiver_fn, exports_to_keep=2),
          BestExporter(serving_input_receiver_fn=receiver_fn, exports_to_keep=None),
          FinalExporter('final', receiver_fn)]


def test_train_and_evaluate_runs_the_exporters_across_a_restart(tmp_path):
  model_dir = tmp_path / 'm'
  ckpt = lambda step: os.path.join(str(model_dir), str(step))
  spec = lambda: je.EvalSpec(EVAL, steps=None, every_n_steps=2, exporters=_exporters())
  _, exports = je.train_and_evaluate(_estimator(model_dir, 0.05),
                                     je.TrainSpec(TRAIN, max_steps=6), spec())
  assert [checkpoint_of(path) for path in exports] == [ckpt(6)] * 3  # latest, best, final
  first = summary.read_scalars(str(model_dir / 'eval'))['loss']
  assert [s for s, _ in first] == [2, 4, 6] and first[0][1] > first[1][1] > first[2][1]
  assert exported_checkpoints(model_dir / 'export' / 'best_exporter') == [ckpt(2), ckpt(4),
                                                                         ckpt(6)]
  assert exported_checkpoints(model_dir / 'export' / 'latest') == [ckpt(4), ckpt(6)]
  assert exported_checkpoints(model_dir / 'export' / 'final') == [ckpt(6)]
  # A new job (new Estimator, new exporters) trains on with a learning rate that diverges:
  # none of its evaluations beats the first job's best, so it makes no best export (tf's
  # BestExporter, which forgot its best on restart, exported step 8).
  je.train_and_evaluate(_estimator(model_dir, 3.0), je.TrainSpec(TRAIN, max_steps=12), spec())
  second = summary.read_scalars(str(model_dir / 'eval'))['loss'][3:]
  assert [s for s, _ in second] == [8, 10, 12] and min(l for _, l in second) > first[2][1]
  assert exported_checkpoints(model_dir / 'export' / 'best_exporter') == [ckpt(2), ckpt(4),
                                                                         ckpt(6)]
  assert exported_checkpoints(model_dir / 'export' / 'latest') == [ckpt(10), ckpt(12)]
  assert exported_checkpoints(model_dir / 'export' / 'final') == [ckpt(6), ckpt(12)]
  record = read_best_eval_result(str(model_dir / 'export' / 'best_exporter'))
  assert record['global_step'] == 6
  np.testing.assert_allclose(record['loss'], first[2][1], rtol=1e-6)


def test_best_exporter_writes_real_saved_models_through_train_and_evaluate(tmp_path):
  model_dir = tmp_path / 'm'
  receiver = je.export.build_raw_serving_input_receiver_fn({'x': np.zeros((1, 8), np.float32)})
  spec = lambda: je.EvalSpec(EVAL, steps=None, every_n_steps=2, exporters=[
      BestExporter(serving_input_receiver_fn=receiver, exports_to_keep=None)])
  est = je.Estimator(mlp_model_fn, str(model_dir),
                     je.RunConfig(save_checkpoints_steps=1000, save_summary_steps=None),
                     {'hidden': 8, 'learning_rate': 0.05})
  _, exports = je.train_and_evaluate(est, je.TrainSpec(TRAIN, max_steps=4), spec())
  losses = summary.read_scalars(str(model_dir / 'eval'))['loss']
  assert [s for s, _ in losses] == [2, 4] and losses[1][1] < losses[0][1]
  versions = export_versions(str(model_dir / 'export' / 'best_exporter'))
  assert len(versions) == 2 and exports == [versions[1]]
  served = tf.saved_model.load(versions[1]).signatures['serving_default'](x=tf.constant(X[:5]))
  expected = [p['logits'] for p in est.predict(
      je.inputs.numpy_input_fn({'x': X[:5]}, batch_size=5, shuffle=False))]
  np.testing.assert_allclose(served['logits'].numpy(), np.stack(expected), atol=1e-5, rtol=0)
  # A restarted job whose evaluations are worse exports nothing.
  diverging = je.Estimator(mlp_model_fn, str(model_dir),
                           je.RunConfig(save_checkpoints_steps=1000, save_summary_steps=None),
                           {'hidden': 8, 'learning_rate': 3.0})
  _, exports = je.train_and_evaluate(diverging, je.TrainSpec(TRAIN, max_steps=6), spec())
  assert exports == [None]
  assert summary.read_scalars(str(model_dir / 'eval'))['loss'][2][1] > losses[1][1]
  assert export_versions(str(model_dir / 'export' / 'best_exporter')) == versions
