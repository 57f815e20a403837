"""Early stopping from the eval event files: the exact stop step, min_steps, thresholds,
check cadences, restarts, and one decision for all processes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je
from jestimator.hooks.base import RunContext
from jestimator.lifecycle import early_stopping as es
from jestimator.summary import write_eval_results

EVERY_10 = {'run_every_secs': None, 'run_every_steps': 10}  # as in TF: secs defaults to 60
LOSSES = {10: 1.0, 20: 0.5, 30: 0.6, 40: 0.7, 50: 0.8, 60: 0.9}


def _model_fn(features, labels, mode):
  pred = nn.Dense(1)(features['x'])[:, 0]
  loss = jnp.mean((pred - labels) ** 2)
  return je.EstimatorSpec(mode, loss=loss, predictions=pred, optimizer=optax.sgd(0.01))


def _input_fn():
  x = np.arange(16, dtype=np.float32).reshape(8, 2) / 16
  return tf.data.Dataset.from_tensors(({'x': x}, x.sum(1))).repeat()


def _estimator(model_dir):
  return je.Estimator(_model_fn, model_dir,
                      config=je.RunConfig(save_summary_steps=None, log_step_count_steps=None))


class ScriptedEvaluations(je.hooks.Hook):
  """Writes `results[step]` into model_dir/eval when training reaches `step`, as an
  evaluation of that checkpoint would."""

  def __init__(self, model_dir, results):
    self.model_dir, self.results = model_dir, results

  def after_step(self, run_context):
    if run_context.step in self.results:
      write_eval_results(self.model_dir, 'eval', run_context.step,
                         self.results[run_context.step])


def _train(est, hook, results, max_steps=60):
  """Trains with `results` appearing as training passes their steps; the global step reached."""
  est.train(_input_fn, max_steps=max_steps,
            hooks=[ScriptedEvaluations(est.model_dir, results), hook])
  return int(est.get_variable_value('global_step'))


def _loss_results(losses=LOSSES):
  return {step: {'loss': loss, 'global_step': step} for step, loss in losses.items()}


def test_read_eval_metrics_by_step(tmp_path):
  write_eval_results(str(tmp_path), 'eval', 20, {'loss': 0.5, 'accuracy': 0.75})
  write_eval_results(str(tmp_path), 'eval', 10, {'loss': 1.0, 'accuracy': 0.5})
  metrics = es.read_eval_metrics(str(tmp_path / 'eval'))
  assert list(metrics) == [10, 20]
  assert metrics == {10: {'loss': 1.0, 'accuracy': 0.5}, 20: {'loss': 0.5, 'accuracy': 0.75}}
  assert es.read_eval_metrics(str(tmp_path / 'missing')) == {}


@pytest.mark.parametrize('min_steps, max_steps_without_decrease, stop_step', [
    (0, 20, 40),   # best 0.5 at 20; at 40 it is 20 steps old
    (0, 30, 50),
    (30, 20, 50),  # 10 and 20 ignored: best 0.6 at 30; 20 steps old at 50
])
def test_stop_if_no_decrease_stops_at_the_exact_step(model_dir, min_steps,
                                                      max_steps_without_decrease, stop_step):
  est = _estimator(model_dir)
  hook = es.stop_if_no_decrease_hook(est, 'loss', max_steps_without_decrease,
                                     min_steps=min_steps, **EVERY_10)
  assert _train(est, hook, _loss_results()) == stop_step
  assert hook.stopped_at == stop_step


def test_stop_if_no_increase_follows_the_best_value(model_dir):
  est = _estimator(model_dir)
  accuracy = {10: 0.5, 20: 0.7, 30: 0.6, 40: 0.8, 50: 0.75, 60: 0.7}
  results = {s: {'accuracy': a, 'loss': 1.0} for s, a in accuracy.items()}
  hook = es.stop_if_no_increase_hook(est, 'accuracy', 20, **EVERY_10)
  assert _train(est, hook, results) == 60  # best moved from 20 to 40: 20 steps old at 60
  assert hook.stopped_at == 60


@pytest.mark.parametrize('kind, threshold, min_steps, stop_step', [
    ('lower', 0.55, 0, 20),
    ('lower', 0.55, 30, None),  # 0.5 at step 20 is ignored: never stops
    ('higher', 0.75, 0, 10),  # loss 1.0 at step 10
    ('higher', 0.75, 20, 50),
    ('higher', 1.0, 0, None),
])
def test_threshold_hooks(model_dir, kind, threshold, min_steps, stop_step):
  est = _estimator(model_dir)
  make_hook = {'lower': es.stop_if_lower_hook, 'higher': es.stop_if_higher_hook}[kind]
  hook = make_hook(est, 'loss', threshold, min_steps=min_steps, **EVERY_10)
  assert _train(est, hook, _loss_results()) == (stop_step or 60)
  assert hook.stopped_at == stop_step


def test_checks_run_on_their_cadence_only(model_dir):
  est = _estimator(model_dir)
  hook = es.stop_if_lower_hook(est, 'loss', 0.55, **EVERY_10)
  assert _train(est, hook, _loss_results({15: 0.5})) == 20  # written at 15, seen at 20


def test_run_every_secs_0_checks_after_every_step(model_dir):
  est = _estimator(model_dir)
  hook = es.stop_if_lower_hook(est, 'loss', 0.55, run_every_secs=0)
  assert _train(est, hook, _loss_results({7: 0.5})) == 7


def test_a_restart_stops_at_once_from_the_files(model_dir):
  est = _estimator(model_dir)
  hook = es.stop_if_no_decrease_hook(est, 'loss', 20, **EVERY_10)
  assert _train(est, hook, _loss_results()) == 40
  fresh = _estimator(model_dir)
  hook = es.stop_if_no_decrease_hook(fresh, 'loss', 20)  # checked in begin
  fresh.train(_input_fn, max_steps=60, hooks=[hook])
  assert hook.stopped_at == 40
  assert int(fresh.get_variable_value('global_step')) == 40  # not a step more


def test_an_evaluation_by_the_estimator_drives_the_hook(model_dir):
  """evaluate() writes model_dir/eval; the next train() reads it in begin."""
  est = _estimator(model_dir)
  est.train(_input_fn, max_steps=10)
  results = est.evaluate(lambda: _input_fn().take(2))
  assert es.read_eval_metrics(est.eval_dir()) == {
      10: pytest.approx({'loss': results['loss']})}
  below = es.stop_if_lower_hook(est, 'loss', results['loss'] / 2, **EVERY_10)
  est.train(_input_fn, max_steps=20, hooks=[below])
  assert below.stopped_at is None and est.get_variable_value('global_step') == 20
  above = es.stop_if_higher_hook(est, 'loss', results['loss'] / 2, **EVERY_10)
  est.train(_input_fn, max_steps=30, hooks=[above])  # the evaluation at 10 is above
  assert above.stopped_at == 20 and est.get_variable_value('global_step') == 20


def test_eval_dir_argument_and_default(model_dir, tmp_path):
  est = _estimator(model_dir)
  other = str(tmp_path / 'elsewhere')
  write_eval_results(other, '.', 10, {'loss': 0.1})
  write_eval_results(model_dir, 'eval', 10, {'loss': 1.0})
  assert es.stop_if_lower_hook(est, 'loss', 0.5, eval_dir=other)._should_stop_fn()
  assert not es.stop_if_lower_hook(est, 'loss', 0.5)._should_stop_fn()


def test_argument_errors(model_dir):
  est = _estimator(model_dir)
  with pytest.raises(ValueError, match='Only one of `run_every_secs` and `run_every_steps`'):
    es.stop_if_lower_hook(est, 'loss', 0.5, run_every_secs=10, run_every_steps=10)
  with pytest.raises(TypeError, match='`estimator` must have type'):
    es.stop_if_lower_hook(object(), 'loss', 0.5)
  with pytest.raises(TypeError, match='`should_stop_fn` must be callable'):
    es.make_early_stopping_hook(est, should_stop_fn=True)
  write_eval_results(model_dir, 'eval', 10, {'loss': 1.0, 'accuracy': 0.5})
  with pytest.raises(ValueError, match=r"step 10 .* no metric 'auc'; it has \['accuracy', "
                                       r"'loss'\]"):
    es.stop_if_higher_hook(est, 'auc', 0.5)._should_stop_fn()


class _Broadcast:
  """multihost_utils.broadcast_one_to_all as seen by one process: process 0's value."""

  def __init__(self, process_0_value):
    self.process_0_value, self.calls = process_0_value, 0

  def __call__(self, value):
    self.calls += 1
    return np.bool_(self.process_0_value)


@pytest.fixture
def two_processes(monkeypatch):
  """Makes this process look like process `index` of 2; returns (set_index, broadcast)."""
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  broadcast = _Broadcast(process_0_value=False)
  monkeypatch.setattr(es.multihost_utils, 'broadcast_one_to_all', broadcast)
  return lambda index: monkeypatch.setattr(jax, 'process_index', lambda: index), broadcast


@pytest.mark.parametrize('process_index, process_0_says, asked', [
    (0, True, 1), (1, True, 0), (1, False, 0)])
def test_several_processes_take_process_0s_decision(two_processes, process_index,
                                                    process_0_says, asked):
  set_index, broadcast = two_processes
  set_index(process_index)
  broadcast.process_0_value = process_0_says
  calls = []
  hook = es.EarlyStoppingHook(lambda: calls.append(1) or process_0_says, run_every_secs=None)
  ctx = RunContext(None, 30)
  hook.begin(ctx)
  assert (broadcast.calls, len(calls)) == (1, asked)  # only process 0 reads the files
  assert ctx.stop_requested == process_0_says
  assert hook.stopped_at == (30 if process_0_says else None)


def test_several_processes_check_on_the_step_cadence_never_on_time(two_processes):
  set_index, broadcast = two_processes
  set_index(1)
  timed = es.EarlyStoppingHook(lambda: True, run_every_secs=0)
  ctx = RunContext(None, 0)
  timed.begin(ctx)
  for ctx.step in range(1, 5):
    timed.after_step(ctx)
  assert broadcast.calls == 1  # begin only: clocks differ between processes

  stepped = es.EarlyStoppingHook(lambda: True, run_every_secs=None, run_every_steps=2)
  ctx = RunContext(None, 0)
  stepped.begin(ctx)
  broadcast.process_0_value = True  # process 0's files say stop from now on
  ctx.step = 1
  stepped.after_step(ctx)
  assert not ctx.stop_requested and broadcast.calls == 2
  ctx.step = 2
  stepped.after_step(ctx)
  assert ctx.stop_requested and stepped.stopped_at == 2 and broadcast.calls == 3
