"""train_and_evaluate: evaluation cadence, state kept in memory, several eval sets, early
stopping; hooks' requested values and the syncs they cost."""

import os

import numpy as np
import pytest

import jestimator as je
from jestimator import train_loop
from jestimator.checkpoint import CheckpointStore
from jestimator.lifecycle.evaluator import training_finished_step
from jestimator.summary import read_scalars
from models import make_data, mlp_model_fn

X, Y = make_data(256)
TRAIN = je.inputs.numpy_input_fn({'x': X}, Y, batch_size=32, shuffle=True, num_epochs=None,
                                 seed=1)
EVAL_A = je.inputs.numpy_input_fn({'x': X[:96]}, Y[:96], batch_size=32, shuffle=False)
EVAL_B = je.inputs.numpy_input_fn({'x': X[96:160]}, Y[96:160], batch_size=32, shuffle=False)


def _estimator(model_dir, **config):
  config = je.RunConfig(save_checkpoints_steps=1000, keep_checkpoint_max=None,
                        save_summary_steps=None, **config)
  return je.Estimator(mlp_model_fn, str(model_dir), config, {'hidden': 8})


def test_evaluates_at_exactly_every_n_steps_with_the_checkpoints_metrics(tmp_path):
  est = _estimator(tmp_path / 'm')
  results, exports = je.train_and_evaluate(
      est, je.TrainSpec(TRAIN, max_steps=15), je.EvalSpec(EVAL_A, steps=None, every_n_steps=5))
  assert exports == [] and results['global_step'] == 15
  events = read_scalars(str(tmp_path / 'm' / 'eval'))
  assert [s for s, _ in events['accuracy']] == [5, 10, 15]
  assert [s for s, _ in events['loss']] == [5, 10, 15]
  for step, loss in events['loss']:  # what a separate evaluate() of that checkpoint says
    again = _estimator(tmp_path / 'm').evaluate(
        EVAL_A, checkpoint_path=str(tmp_path / 'm' / str(step)), name='again')
    np.testing.assert_allclose(loss, again['loss'], rtol=1e-6)
  np.testing.assert_allclose(events['accuracy'][-1][1], results['accuracy'], rtol=1e-6)
  assert training_finished_step(str(tmp_path / 'm')) == 15


def test_rounds_neither_restore_nor_recompile(tmp_path, monkeypatch):
  est = _estimator(tmp_path / 'm')
  est.train(TRAIN, max_steps=1)  # the first state: created, not restored
  restores = []
  for name in ('restore_state', 'restore_for_inference', 'restore_input'):
    original = getattr(CheckpointStore, name)
    monkeypatch.setattr(CheckpointStore, name,
                        lambda self, *a, _o=original, _n=name, **k: restores.append(_n) or
                        _o(self, *a, **k))
  je.train_and_evaluate(est, je.TrainSpec(TRAIN, max_steps=13),
                        je.EvalSpec(EVAL_A, steps=None, every_n_steps=4))
  assert restores == []
  runner = est._runner  # pylint: disable=protected-access
  compiled = [*runner._train.values(), *runner._eval.values()]  # pylint: disable=protected-access
  assert compiled and all(f._cache_size() == 1 for f in compiled)  # pylint: disable=protected-access


def test_several_named_eval_sets_write_their_own_dirs(tmp_path):
  est = _estimator(tmp_path / 'm')
  results, exports = je.train_and_evaluate(
      est, je.TrainSpec(TRAIN, max_steps=6),
      {'a': je.EvalSpec(EVAL_A, steps=None, every_n_steps=3),
       'b': je.EvalSpec(EVAL_B, steps=None, every_n_steps=6)})
  assert sorted(results) == ['a', 'b'] and exports == {'a': [], 'b': []}
  assert [s for s, _ in read_scalars(str(tmp_path / 'm' / 'eval_a'))['loss']] == [3, 6]
  assert [s for s, _ in read_scalars(str(tmp_path / 'm' / 'eval_b'))['loss']] == [6]
  assert not os.path.exists(tmp_path / 'm' / 'eval')
  direct = est.evaluate(EVAL_B, name='direct')
  np.testing.assert_allclose(results['b']['loss'], direct['loss'], rtol=1e-6)
  with pytest.raises(ValueError, match='distinct names'):
    je.train_and_evaluate(est, je.TrainSpec(TRAIN, max_steps=7),
                          [je.EvalSpec(EVAL_A), je.EvalSpec(EVAL_B)])


def test_time_based_throttle_evaluates_each_new_checkpoint(tmp_path):
  est = _estimator(tmp_path / 'm')
  je.train_and_evaluate(est, je.TrainSpec(TRAIN, max_steps=3),
                        je.EvalSpec(EVAL_A, steps=1, start_delay_secs=0, throttle_secs=0))
  assert [s for s, _ in read_scalars(str(tmp_path / 'm' / 'eval'))['loss']] == [1, 2, 3]


def test_early_stopping_ends_train_and_evaluate(tmp_path):
  est = _estimator(tmp_path / 'm')
  stop = je.early_stopping.stop_if_higher_hook(est, 'accuracy', 0.0, run_every_secs=None)
  results, _ = je.train_and_evaluate(est, je.TrainSpec(TRAIN, max_steps=50, hooks=[stop]),
                                     je.EvalSpec(EVAL_A, steps=None, every_n_steps=5))
  assert results['global_step'] == 5 and stop.stopped_at == 5
  assert [s for s, _ in read_scalars(str(tmp_path / 'm' / 'eval'))['loss']] == [5]
  assert training_finished_step(str(tmp_path / 'm')) == 5


class _Asks(je.hooks.Hook):
  def __init__(self, request):
    self.request, self.seen = request, []

  def requests(self):
    return self.request

  def after_step(self, run_context):
    if run_context.values:
      self.seen.append((run_context.step, dict(run_context.values)))


@pytest.mark.parametrize('request_, log_every, fetches', [
    (None, None, 0),                                         # asking nothing costs nothing
    (je.hooks.Request(['loss'], every_n_steps=5), None, 4),  # 5, 10, 15, 20
    (je.hooks.Request(['loss'], every_n_steps=5), 10, 4),    # the log at 10, 20 shares them
    (None, 10, 2),
])
def test_values_are_fetched_on_requested_steps_only(tmp_path, monkeypatch, request_, log_every,
                                                    fetches):
  calls = []
  original = train_loop.fetch_values
  monkeypatch.setattr(train_loop, 'fetch_values',
                      lambda *a: calls.append(a[0]) or original(*a))
  hook = _Asks(request_)
  est = _estimator(tmp_path / 'm', log_step_count_steps=log_every)
  est.train(TRAIN, max_steps=20, hooks=[hook])
  assert len(calls) == fetches
  if request_ is not None:
    assert [s for s, _ in hook.seen] == [5, 10, 15, 20]
    assert all(set(v) == {'loss'} and np.isfinite(v['loss']) for _, v in hook.seen)


def test_requested_loss_and_metrics_equal_the_log_line(tmp_path, caplog):
  hook = _Asks(je.hooks.Request(['loss', 'accuracy', 'global_step'], every_n_steps=10))
  est = _estimator(tmp_path / 'm', log_step_count_steps=10)
  with caplog.at_level('INFO', logger='jestimator'):
    est.train(TRAIN, max_steps=20, hooks=[hook])
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith('step ')]
  assert len(lines) == 2
  for (step, values), line in zip(hook.seen, lines):
    assert values['global_step'] == step
    assert line.startswith(f"step {step}: loss = {values['loss']:.6g}, "
                           f"accuracy = {values['accuracy']:.6g}")


def test_evaluate_hooks_get_running_metrics_and_the_results(tmp_path):
  est = _estimator(tmp_path / 'm')
  est.train(TRAIN, max_steps=3)
  every = _Asks(je.hooks.Request(['accuracy', 'loss'], every_n_steps=1))
  final = je.hooks.FinalOpsHook({'acc': 'accuracy', 'step': 'global_step'})
  results = est.evaluate(EVAL_A, hooks=[every, final])
  assert [s for s, _ in every.seen] == [1, 2, 3]
  np.testing.assert_allclose(every.seen[-1][1]['accuracy'], results['accuracy'], rtol=1e-6)
  assert final.final_ops_values == {'acc': results['accuracy'], 'step': 3}
  assert '<table>' in results._repr_html_() and isinstance(results, dict)


def test_predict_hooks_see_the_batch_predictions(tmp_path):
  est = _estimator(tmp_path / 'm')
  est.train(TRAIN, max_steps=2)
  hook = _Asks(je.hooks.Request(['class_ids'], every_n_steps=2))
  fn = je.inputs.numpy_input_fn({'x': X[:80]}, batch_size=32, shuffle=False)
  predicted = np.array([p['class_ids'] for p in est.predict(fn, hooks=[hook])])
  assert [s for s, _ in hook.seen] == [2]
  np.testing.assert_array_equal(hook.seen[0][1]['class_ids'], predicted[32:64])


def test_spec_hooks_and_saving_listeners_run(tmp_path):
  seen = []

  class Listener(je.hooks.CheckpointSaverListener):
    def before_save(self, run_context):
      seen.append(('before', run_context.step))

    def after_save(self, run_context):
      seen.append(('after', run_context.step))

  class Counter(je.hooks.Hook):
    def end(self, run_context):
      seen.append((run_context.mode, run_context.step))

  def model_fn(features, labels, mode, params):
    spec = mlp_model_fn(features, labels, mode, params)
    hooks = {f'{m}_hooks': [Counter()] for m in ('training', 'evaluation', 'prediction')}
    return je.EstimatorSpec(mode, loss=spec.loss, predictions=spec.predictions,
                            optimizer=spec.optimizer, eval_metrics=spec.eval_metrics, **hooks)

  config = je.RunConfig(save_checkpoints_steps=2, save_summary_steps=None)
  est = je.Estimator(model_fn, str(tmp_path / 'm'), config, {'hidden': 8})
  est.train(TRAIN, max_steps=3, saving_listeners=[Listener()])
  est.evaluate(EVAL_A, steps=2)
  list(est.predict(je.inputs.numpy_input_fn({'x': X[:32]}, batch_size=32, shuffle=False)))
  assert seen == [('before', 2), ('after', 2), ('train', 3), ('before', 3), ('after', 3),
                  ('eval', 2), ('infer', 1)]


def test_restore_best_makes_the_best_checkpoint_the_one_used(tmp_path):
  est = _estimator(tmp_path / 'm', keep_best_checkpoints=1, best_metric='loss', best_mode='max')
  je.train_and_evaluate(est, je.TrainSpec(TRAIN, max_steps=9),
                        je.EvalSpec(EVAL_A, steps=None, every_n_steps=3), restore_best=True)
  losses = dict(read_scalars(str(tmp_path / 'm' / 'eval'))['loss'])
  worst = max(losses, key=losses.get)  # best_mode='max': the highest loss is "best"
  assert est.latest_checkpoint() == str(tmp_path / 'm' / str(worst)) == est.best_checkpoint()
  np.testing.assert_allclose(est.evaluate(EVAL_A, name='x')['loss'], losses[worst], rtol=1e-6)
  est.train(TRAIN, max_steps=10)  # training continues from the newest, then it is used again
  assert est.latest_checkpoint().endswith('/10')
  with pytest.raises(ValueError, match='keep_best_checkpoints'):
    je.train_and_evaluate(_estimator(tmp_path / 'n'), je.TrainSpec(TRAIN, max_steps=2),
                          je.EvalSpec(EVAL_A), restore_best=True)
