"""The stock hooks (basic_hooks.py): TF's arguments and messages, driven through a HookSet
the way the loops drive them, then end to end through train and evaluate."""

import glob
import logging
import os
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jestimator as je
from jestimator import summary
from jestimator.hooks import basic_hooks
from jestimator.hooks.base import RunContext
from jestimator.hooks.basic_hooks import (FinalOpsHook, LoggingTensorHook, NanTensorHook,
                                          ProfilerHook, StepCounterHook)
from jestimator.hooks.hook_set import HookSet
from jestimator.train_loop import NanLossDuringTrainingError
from conftest import one_device_mesh
from models import make_data, mlp_model_fn

KEYS = ('loss', 'global_step', 'accuracy')


def loss_at(step):
  return np.float32(step / 2)


def values_at(step, loss_fn=loss_at):
  return {'loss': loss_fn(step), 'global_step': np.int64(step),
          'accuracy': np.float32(step / 100)}


def drive(hooks, last, loss_fn=loss_at, start=0, state=None, estimator=None):
  """Runs steps start+1..last as the train loop does: values only for the due hooks;
  stops early on request. Returns the RunContext."""
  ctx = RunContext(estimator, start, state)
  hook_set = HookSet(hooks, ctx, KEYS)
  hook_set.begin()
  for step in range(start + 1, last + 1):
    due = hook_set.due(step)
    values = {k: values_at(step, loss_fn)[k] for k in hook_set.keys(due)} if due else None
    hook_set.after_step(step, state, due, values)
    if hook_set.stop_requested:
      break
  hook_set.end(lambda keys: {k: values_at(ctx.step, loss_fn)[k] for k in keys})
  return ctx


@pytest.fixture
def clock(monkeypatch):
  """The hooks' host clock, advanced by hand: `clock.t += 0.5`."""
  class Clock:
    t = 100.0
  monkeypatch.setattr(basic_hooks, '_now', lambda: Clock.t)
  return Clock


def tick_each_step(hook, clock, secs):
  """The hook, with the clock advanced by `secs` before each of its after_step calls."""
  original = hook.after_step

  def after_step(ctx):
    clock.t += secs
    original(ctx)
  hook.after_step = after_step
  return hook


def messages(caplog):
  return [r.getMessage() for r in caplog.records if r.name == 'jestimator']


# -- LoggingTensorHook ---------------------------------------------------------------------


@pytest.mark.parametrize('kwargs, message', [
    ({}, 'either at_end and/or exactly one of every_n_iter and every_n_secs must be provided.'),
    ({'every_n_iter': 2, 'every_n_secs': 1.0}, 'either at_end and/or exactly one'),
    ({'every_n_iter': 2, 'every_n_secs': 1.0, 'at_end': True}, 'either at_end and/or'),
    ({'every_n_iter': 0}, r'invalid every_n_iter=0\.'),
    ({'every_n_iter': -3}, r'invalid every_n_iter=-3\.'),
])
def test_logging_tensor_hook_argument_rules(kwargs, message):
  with pytest.raises(ValueError, match=message):
    LoggingTensorHook(['loss'], **kwargs)


def test_logging_tensor_hook_logs_every_n_iter_in_tf_format(caplog, clock):
  caplog.set_level(logging.INFO, 'jestimator')
  drive([tick_each_step(LoggingTensorHook(['loss', 'global_step'], every_n_iter=3), clock, 0.25)],
        7)
  # steps 3 and 6; the second line says the 3 steps * 0.25 s since the first
  assert messages(caplog) == ['loss = 1.5, global_step = 3',
                              'loss = 3.0, global_step = 6 (0.750 sec)']


def test_logging_tensor_hook_dict_tags_sorted_at_end_and_formatter(caplog):
  caplog.set_level(logging.INFO, 'jestimator')
  drive([LoggingTensorHook({'z_acc': 'accuracy', 'a_loss': 'loss'}, at_end=True)], 5)
  assert messages(caplog) == ['a_loss = 2.5, z_acc = 0.05']
  caplog.clear()
  formatter = lambda v: f"custom {v['l']:.2f}"  # noqa: E731
  drive([LoggingTensorHook({'l': 'loss'}, every_n_iter=2, formatter=formatter)], 4)
  assert messages(caplog) == ['custom 1.00', 'custom 2.00']


def test_logging_tensor_hook_every_n_secs_uses_the_request_clock(caplog):
  caplog.set_level(logging.INFO, 'jestimator')
  drive([LoggingTensorHook(['global_step'], every_n_secs=0)], 3)  # due on every step
  assert [m.split(' (')[0] for m in messages(caplog)] == [
      'global_step = 1', 'global_step = 2', 'global_step = 3']


def test_logging_tensor_hook_unknown_key_is_named():
  with pytest.raises(ValueError, match=r"requests \['los'\].*'accuracy', 'global_step', 'loss'"):
    drive([LoggingTensorHook(['los'], every_n_iter=1)], 1)


# -- StepCounterHook -----------------------------------------------------------------------


class Writer:
  def __init__(self):
    self.written = []

  def write_scalars(self, step, scalars):
    self.written.append((step, scalars))


def test_step_counter_hook_every_n_steps(caplog, clock):
  caplog.set_level(logging.INFO, 'jestimator')
  writer = Writer()
  drive([tick_each_step(StepCounterHook(every_n_steps=10, summary_writer=writer), clock, 0.5)],
        30)
  # baseline at step 1; then 9 steps in 4.5 s, 10 in 5 s, 10 in 5 s
  assert [s for s, _ in writer.written] == [10, 20, 30]
  np.testing.assert_allclose([v['global_step/sec'] for _, v in writer.written], [2.0] * 3)
  assert messages(caplog) == ['global_step/sec: 2'] * 3


def test_step_counter_hook_every_n_secs_and_output_dir(clock, monkeypatch, tmp_path):
  written = []
  fake = type(sys)('jestimator.summary')
  fake.write_scalars = lambda logdir, step, scalars: written.append((logdir, step, scalars))
  monkeypatch.setitem(sys.modules, 'jestimator.summary', fake)
  monkeypatch.setattr(je, 'summary', fake, raising=False)
  hook = StepCounterHook(every_n_steps=None, every_n_secs=2.0, output_dir=str(tmp_path))
  drive([tick_each_step(hook, clock, 0.25)], 20)
  # baseline at step 1, then every 8 steps (2.0 s): 4 steps/s
  assert [(d, s) for d, s, _ in written] == [(str(tmp_path), 9), (str(tmp_path), 17)]
  np.testing.assert_allclose([v['global_step/sec'] for _, _, v in written], [4.0, 4.0])


def test_step_counter_hook_needs_exactly_one_cadence():
  for kwargs in ({'every_n_steps': None}, {'every_n_steps': 5, 'every_n_secs': 1.0}):
    with pytest.raises(ValueError, match='exactly one of every_n_steps and every_n_secs'):
      StepCounterHook(**kwargs)


def test_step_counter_hook_requests_nothing():
  assert StepCounterHook().requests() is None


# -- NanTensorHook -------------------------------------------------------------------------


def nan_from_step_3(step):
  return np.float32('nan') if step >= 3 else np.float32(1.0)


def test_nan_tensor_hook_raises_on_the_first_checked_step():
  hook = NanTensorHook(every_n_steps=2)
  assert hook.fail_on_nan_loss
  with pytest.raises(NanLossDuringTrainingError,
                     match=r'NaN loss during training\. .*loss = nan at global step 4\.'):
    drive([hook], 10, nan_from_step_3)  # step 3 is not read; step 4 is


def test_nan_tensor_hook_warns_and_stops(caplog):
  caplog.set_level(logging.INFO, 'jestimator')
  ctx = drive([NanTensorHook('loss', fail_on_nan_loss=False, every_n_steps=2)], 10,
              lambda s: np.float32('inf') if s >= 5 else np.float32(1.0))
  assert ctx.stop_requested and ctx.step == 6
  assert messages(caplog) == ['Model diverged with loss = inf at global step 6. Stopping.']


def test_nan_tensor_hook_is_quiet_on_finite_loss():
  ctx = drive([NanTensorHook(every_n_steps=1)], 5)
  assert not ctx.stop_requested and ctx.step == 5


# -- ProfilerHook --------------------------------------------------------------------------


@pytest.fixture
def trace_calls(monkeypatch):
  """jax.profiler's start/stop replaced by a record of (what, dir)."""
  calls = []
  monkeypatch.setattr(jax.profiler, 'start_trace', lambda d: calls.append(('start', d)))
  monkeypatch.setattr(jax.profiler, 'stop_trace', lambda: calls.append(('stop', None)))
  return calls


class Est:
  model_dir = '/models/m'


def record_steps(hook, calls):
  """Wraps after_step to note the step at which each start/stop happened."""
  original, steps = hook.after_step, []

  def after_step(ctx):
    n = len(calls)
    original(ctx)
    steps.extend((calls[i][0], ctx.step) for i in range(n, len(calls)))
  hook.after_step = after_step
  return steps


@pytest.mark.parametrize('kwargs, start, window', [
    ({}, 100, (110, 115)),                              # start + 10, 5 steps
    ({'save_steps': 4, 'num_steps': 2}, 100, (104, 106)),
    ({'start_step': 120, 'num_steps': 3}, 100, (120, 123)),
])
def test_profiler_hook_traces_its_window(trace_calls, kwargs, start, window):
  hook = ProfilerHook(**kwargs)
  steps = record_steps(hook, trace_calls)
  drive([hook], 130, start=start, state=jnp.zeros(2), estimator=Est())
  assert steps == [('start', window[0]), ('stop', window[1])]
  assert trace_calls[0] == ('start', '/models/m')


def test_profiler_hook_save_secs_and_stop_at_end(trace_calls, clock, tmp_path):
  hook = tick_each_step(ProfilerHook(save_secs=1.0, output_dir=str(tmp_path), num_steps=50),
                        clock, 0.25)
  drive([hook], 20, state=jnp.zeros(2), estimator=Est())
  # 4 steps * 0.25 s reach 1 s at step 4; the run ends (step 20) inside the window
  assert trace_calls == [('start', str(tmp_path)), ('stop', None)]


def test_profiler_hook_argument_rules():
  with pytest.raises(ValueError, match='Can not provide both every_secs and every_steps'):
    ProfilerHook(save_steps=1, save_secs=1)
  with pytest.raises(ValueError, match='num_steps must be a positive int'):
    ProfilerHook(num_steps=0)


def test_profiler_hook_writes_an_xplane_for_tensorboard(tmp_path):
  step_fn = jax.jit(lambda s: s * 2.0 + 1.0)
  hook = ProfilerHook(start_step=1, num_steps=2, output_dir=str(tmp_path))
  ctx = RunContext(Est(), 0, jnp.ones(4))
  hook_set = HookSet([hook], ctx, KEYS)
  hook_set.begin()
  state = ctx.state
  for step in range(1, 5):
    state = step_fn(state)
    hook_set.after_step(step, state)
  hook_set.end()
  (xplane,) = glob.glob(str(tmp_path / 'plugins' / 'profile' / '*' / '*.xplane.pb'))
  assert os.path.getsize(xplane) > 0
  jax.profiler.start_trace(str(tmp_path / 'again'))  # the hook's trace is not left running
  jax.profiler.stop_trace()


# -- FinalOpsHook --------------------------------------------------------------------------


@pytest.mark.parametrize('final_ops, expected', [
    ('loss', np.float32(3.5)),
    (['global_step', 'loss'], [7, np.float32(3.5)]),
    ({'acc': 'accuracy', 'step': 'global_step'}, {'acc': np.float32(0.07), 'step': 7}),
])
def test_final_ops_hook_returns_tf_structure(final_ops, expected):
  hook = FinalOpsHook(final_ops)
  assert hook.final_ops_values is None
  drive([hook], 7)
  got = hook.final_ops_values
  assert isinstance(got, type(expected))
  if isinstance(expected, dict):
    assert got.keys() == expected.keys()
    got, expected = list(got.values()), list(expected.values())
  np.testing.assert_allclose(got, expected)


def test_final_ops_hook_requests_only_at_end():
  request = FinalOpsHook({'a': 'loss', 'b': 'loss'}).requests()
  assert request.keys == ('loss',) and request.at_end
  assert request.every_n_steps is None and request.every_n_secs is None
  assert FinalOpsHook(None).requests() is None


def test_final_ops_hook_rejects_a_feed_dict():
  with pytest.raises(ValueError, match='final_ops_feed_dict is not supported'):
    FinalOpsHook('loss', final_ops_feed_dict={'x': 1})


# -- end to end: train and evaluate deliver the values ---------------------------------------


def config(**kwargs):
  """One device: hooks run on the host, and one device compiles fastest."""
  return je.RunConfig(mesh=one_device_mesh(), **kwargs)


def batches(n=12, batch=32):
  """input_fn of `n` batches of the models.py data."""
  x, y = make_data(n * batch)

  def input_fn():
    for i in range(n):
      rows = slice(i * batch, (i + 1) * batch)
      yield {'x': x[rows]}, y[rows]
  return input_fn


def regression_model_fn(features, labels, mode):
  pred = nn.Dense(1)(features['x'])[:, 0]
  loss = jnp.mean((pred - labels) ** 2)
  return je.EstimatorSpec(mode, loss=loss, predictions=pred, optimizer=optax.sgd(0.01))


def regression_batches(n=20, nan_from=3):
  def input_fn():
    for i in range(n):
      y = np.full((8,), np.nan if i >= nan_from else 1.0, np.float32)
      yield {'x': np.ones((8, 2), np.float32)}, y
  return input_fn


def test_logging_tensor_hook_logs_the_losses_of_the_train_log_line(model_dir, caplog):
  caplog.set_level(logging.INFO, 'jestimator')
  est = je.Estimator(mlp_model_fn, model_dir, config(log_step_count_steps=4), {})
  est.train(batches(), max_steps=12,
            hooks=[LoggingTensorHook(['global_step', 'loss', 'accuracy'], every_n_iter=2)])
  hook_lines = [re.match(r'global_step = (\d+), loss = ([^,]+), accuracy = ([\d.]+)', m)
                for m in messages(caplog)]
  hooked = {int(m[1]): (float(m[2]), float(m[3])) for m in hook_lines if m}
  logged = {int(m[1]): float(m[2]) for m in
            (re.match(r'step (\d+): loss = ([^,]+),', m) for m in messages(caplog)) if m}
  assert sorted(hooked) == [2, 4, 6, 8, 10, 12] and sorted(logged) == [4, 8, 12]
  for step, loss in logged.items():
    assert hooked[step][0] == pytest.approx(loss, rel=1e-5)
  assert all(0.0 <= acc <= 1.0 for _, acc in hooked.values())
  assert len({loss for loss, _ in hooked.values()}) == 6  # each step's own loss


def test_final_ops_hook_in_evaluate_equals_the_results(model_dir):
  est = je.Estimator(mlp_model_fn, model_dir, config(), {})
  est.train(batches(), max_steps=5)
  hook = FinalOpsHook({'acc': 'accuracy', 'loss': 'loss', 'step': 'global_step'})
  results = est.evaluate(batches(4), hooks=[hook])
  assert results['global_step'] == 5
  assert hook.final_ops_values == {'acc': results['accuracy'], 'loss': results['loss'],
                                   'step': results['global_step']}


def test_final_ops_hook_in_train_holds_the_final_loss(model_dir, caplog):
  caplog.set_level(logging.INFO, 'jestimator')
  hook = FinalOpsHook(['global_step', 'loss'])
  je.Estimator(mlp_model_fn, model_dir, config(), {}).train(batches(), max_steps=7, hooks=[hook])
  (final,) = [m for m in messages(caplog) if m.startswith('Loss for final step')]
  step, loss = hook.final_ops_values
  assert step == 7 and float(loss) == pytest.approx(float(final.split(': ')[1].rstrip('.')))


def test_nan_tensor_hook_raises_in_train(model_dir):
  est = je.Estimator(regression_model_fn, model_dir, config(log_step_count_steps=100))
  # batch 3 (the step to global step 4) has NaN labels; the hook reads steps 2, 4, ...
  with pytest.raises(NanLossDuringTrainingError,
                     match=r'NaN loss during training\. .*loss = nan at global step 4\.'):
    est.train(regression_batches(), hooks=[NanTensorHook(every_n_steps=2)])


def test_nan_tensor_hook_without_fail_stops_and_keeps_the_good_checkpoint(model_dir, caplog):
  caplog.set_level(logging.INFO, 'jestimator')
  est = je.Estimator(regression_model_fn, model_dir,
                     config(log_step_count_steps=100, save_checkpoints_steps=2))
  est.train(regression_batches(), hooks=[NanTensorHook(fail_on_nan_loss=False,
                                                       every_n_steps=2)])
  assert 'Model diverged with loss = nan at global step 4. Stopping.' in messages(caplog)
  assert est.get_variable_value('global_step') == 2  # neither NaN step 4 nor step 20
  assert np.isfinite(est.get_variable_value('params/Dense_0/kernel')).all()


def test_profiler_hook_leaves_an_xplane_in_model_dir(model_dir):
  est = je.Estimator(mlp_model_fn, model_dir, config(), {})
  est.train(batches(), max_steps=6, hooks=[ProfilerHook(start_step=2, num_steps=2)])
  (xplane,) = glob.glob(os.path.join(model_dir, 'plugins', 'profile', '*', '*.xplane.pb'))
  assert os.path.getsize(xplane) > 0


def test_step_counter_hook_writes_global_step_per_sec(model_dir):
  est = je.Estimator(mlp_model_fn, model_dir, config(save_summary_steps=None), {})
  est.train(batches(), max_steps=12,
            hooks=[StepCounterHook(every_n_steps=4, output_dir=model_dir)])
  (points,) = summary.read_scalars(model_dir).values()
  assert [step for step, _ in points] == [4, 8, 12]
  assert all(rate > 0 for _, rate in points)
