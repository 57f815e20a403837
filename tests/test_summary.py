"""TensorBoard summaries: the writer/reader round trip, the eval layout, plot_history and
SummarySaverHook end to end."""

import os
import shutil
import threading

import matplotlib

matplotlib.use('Agg')

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import jestimator as je  # noqa: E402
from jestimator import summary  # noqa: E402
from jestimator.hooks.base import RunContext  # noqa: E402
from jestimator.hooks.summary_saver import SummarySaverHook, find_learning_rate  # noqa: E402


def _events_by_tf(logdir):
  """{tag: [(step, value)]} read with TF's own iterator, independently of read_scalars."""
  out = {}
  for name in sorted(os.listdir(logdir)):
    for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
  return out


# -- write_scalars / read_scalars ------------------------------------------------------


def test_write_read_round_trip(tmp_path):
  logdir = str(tmp_path / 'run')
  summary.write_scalars(logdir, 1, {'loss': 0.5, 'accuracy': np.float32(0.25), 'n': 3})
  summary.write_scalars(logdir, 2, {'loss': jnp.asarray(0.375), 'accuracy': 0.5})
  assert summary.read_scalars(logdir) == {'accuracy': [(1, 0.25), (2, 0.5)],
                                          'loss': [(1, 0.5), (2, 0.375)], 'n': [(1, 3.0)]}
  assert _events_by_tf(logdir)['loss'] == [(1, 0.5), (2, 0.375)]


def test_non_scalar_and_non_numeric_values_are_skipped(tmp_path):
  logdir = str(tmp_path / 'run')
  summary.write_scalars(logdir, 4, {'loss': 1.5, 'vector': np.ones(3), 'name': 'adam',
                                    'matrix': jnp.zeros((2, 2)), 'none': None})
  assert summary.read_scalars(logdir) == {'loss': [(4, 1.5)]}


def test_last_value_wins_for_a_repeated_step_and_steps_are_sorted(tmp_path):
  logdir = str(tmp_path / 'run')
  for step, value in ((10, 1.0), (5, 2.0), (10, 3.0)):
    summary.write_scalars(logdir, step, {'loss': value})
  assert summary.read_scalars(logdir) == {'loss': [(5, 2.0), (10, 3.0)]}


def test_read_scalars_of_a_missing_or_empty_directory_is_empty(tmp_path):
  assert summary.read_scalars(str(tmp_path / 'missing')) == {}
  assert summary.read_scalars(str(tmp_path)) == {}


def test_read_scalars_reads_tf1_simple_values(tmp_path):
  """tf.estimator's eval folders hold `simple_value` summaries (not tensors)."""
  from tensorboard.compat.proto import event_pb2, summary_pb2
  path = str(tmp_path / 'events.out.tfevents.1.host')
  with tf.io.TFRecordWriter(path) as writer:
    for step, value in ((100, 0.75), (200, 0.5)):
      summ = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag='loss',
                                                                  simple_value=value)])
      writer.write(event_pb2.Event(step=step, wall_time=1.0, summary=summ).SerializeToString())
  assert summary.read_scalars(str(tmp_path)) == {'loss': [(100, 0.75), (200, 0.5)]}


def test_a_deleted_and_recreated_directory_gets_a_new_file(tmp_path):
  logdir = str(tmp_path / 'run')
  summary.write_scalars(logdir, 1, {'loss': 1.0})
  shutil.rmtree(logdir)
  summary.write_scalars(logdir, 2, {'loss': 2.0})
  assert summary.read_scalars(logdir) == {'loss': [(2, 2.0)]}


def test_unwaited_writes_land_in_order_once_flushed(tmp_path):
  logdir = str(tmp_path / 'run')
  for step in range(1, 41):
    summary.write_scalars(logdir, step, {'loss': step / 8, 'accuracy': 1 - step / 64}, wait=False)
  summary.flush_pending()
  assert _events_by_tf(logdir) == {'loss': [(s, s / 8) for s in range(1, 41)],
                                   'accuracy': [(s, 1 - s / 64) for s in range(1, 41)]}


def test_the_events_are_tf_summary_scalars(tmp_path):
  """Same tensor, dtype and plugin metadata as tf.summary.scalar writes."""
  ours, theirs = str(tmp_path / 'ours'), str(tmp_path / 'theirs')
  summary.write_scalars(ours, 3, {'loss': 0.25})
  with tf.summary.create_file_writer(theirs).as_default(step=3):
    tf.summary.scalar('loss', 0.25)
  tf.summary.flush()

  def values(logdir):
    out = []
    for name in os.listdir(logdir):
      for event in tf.compat.v1.train.summary_iterator(os.path.join(logdir, name)):
        out += [(event.step, v.tag, v.metadata.plugin_data.plugin_name, v.tensor.dtype,
                 float(tf.make_ndarray(v.tensor))) for v in event.summary.value]
    return out
  assert values(ours) == values(theirs) == [(3, 'loss', 'scalars', 1, 0.25)]


def test_a_logdir_that_cannot_be_made_is_an_error_naming_it(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  with pytest.raises(Exception, match='a_file'):
    summary.write_scalars(str(blocker / 'run'), 1, {'loss': 1.0}, wait=False)


def test_processes_other_than_0_write_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  summary.write_scalars(str(tmp_path / 'run'), 1, {'loss': 1.0})
  assert not (tmp_path / 'run').exists()


def test_eval_results_go_to_model_dir_eval_without_global_step(tmp_path):
  model_dir = str(tmp_path)
  results = {'loss': 0.25, 'accuracy': 0.875, 'global_step': 7}
  summary.write_eval_results(model_dir, 'eval', 7, results)
  summary.write_eval_results(model_dir, 'eval_test', 7, {**results, 'loss': 0.5})
  assert summary.read_scalars(os.path.join(model_dir, 'eval')) == {
      'accuracy': [(7, 0.875)], 'loss': [(7, 0.25)]}
  assert summary.read_scalars(os.path.join(model_dir, 'eval_test'))['loss'] == [(7, 0.5)]
  assert summary.read_scalars(model_dir) == {}  # nothing in the train folder


# -- plot_history ----------------------------------------------------------------------


@pytest.fixture
def history(tmp_path):
  model_dir = str(tmp_path)
  for step in (1, 2, 3):
    summary.write_scalars(model_dir, step, {'loss': 1.0 / step, 'learning_rate': 0.1})
  summary.write_eval_results(model_dir, 'eval', 3, {'loss': 0.5, 'accuracy': 0.75})
  summary.write_eval_results(model_dir, 'eval_test', 3, {'loss': 0.625})
  yield model_dir
  plt.close('all')


def test_plot_history_draws_one_axes_per_tag_with_train_and_each_eval(history):
  fig = summary.plot_history(history)
  visible = [ax for ax in fig.axes if ax.get_visible()]
  assert [ax.get_title() for ax in visible] == ['loss', 'accuracy', 'learning_rate']
  lines = {line.get_label(): line for line in visible[0].get_lines()}
  assert sorted(lines) == ['eval', 'eval_test', 'train']
  np.testing.assert_allclose(lines['train'].get_xydata(), [[1, 1.0], [2, 0.5], [3, 1 / 3]],
                             rtol=1e-6)
  np.testing.assert_allclose(lines['eval_test'].get_xydata(), [[3, 0.625]])
  assert [line.get_label() for line in visible[1].get_lines()] == ['eval']


def test_plot_history_selected_metrics_and_given_axes(history):
  fig = summary.plot_history(history, metrics='accuracy')
  assert len(fig.axes) == 1 and fig.axes[0].get_title() == 'accuracy'
  mine, axes = plt.subplots(1, 2)
  assert summary.plot_history(history, metrics=['loss', 'accuracy'], ax=axes) is mine
  assert [ax.get_title() for ax in axes] == ['loss', 'accuracy']
  with pytest.raises(ValueError, match=r"1 axes given"):
    summary.plot_history(history, metrics=['loss', 'accuracy'], ax=axes[0])


def test_plot_history_names_unknown_metrics_and_empty_dirs(history, tmp_path):
  with pytest.raises(ValueError, match=r"no scalars named \['auc'\].*'accuracy'"):
    summary.plot_history(history, metrics=['auc'])
  with pytest.raises(ValueError, match='no TensorBoard scalars'):
    summary.plot_history(str(tmp_path / 'nothing'))


def test_plot_history_without_matplotlib_says_how_to_install(history, monkeypatch):
  import builtins
  real_import = builtins.__import__

  def no_matplotlib(name, *args, **kwargs):
    if name.startswith('matplotlib'):
      raise ImportError('No module named matplotlib')
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, '__import__', no_matplotlib)
  with pytest.raises(ImportError, match='pip install matplotlib'):
    summary.plot_history(history)


# -- SummarySaverHook ------------------------------------------------------------------


def test_summary_saver_hook_arguments():
  with pytest.raises(ValueError, match='exactly one of save_steps and save_secs'):
    SummarySaverHook()
  with pytest.raises(ValueError, match='exactly one of save_steps and save_secs'):
    SummarySaverHook(save_steps=5, save_secs=10)
  with pytest.raises(ValueError, match='summary_op does not apply'):
    SummarySaverHook(save_steps=5, summary_op=object())
  with pytest.raises(ValueError, match='scaffold does not apply'):
    SummarySaverHook(save_steps=5, scaffold=object())
  with pytest.raises(ValueError, match='write_scalars'):
    SummarySaverHook(save_steps=5, summary_writer=object())
  assert SummarySaverHook(save_secs=30).requests() == je.hooks.Request(
      '*', every_n_secs=30)
  with pytest.raises(ValueError, match="a train hook, not for 'eval'"):
    SummarySaverHook(save_steps=5).begin(RunContext(None, 0, mode='eval'))


def test_find_learning_rate_in_a_chained_injected_state():
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.inject_hyperparams(optax.sgd)(learning_rate=0.25))
  state = tx.init({'w': jnp.ones(2)})
  assert float(find_learning_rate(state)) == 0.25
  assert find_learning_rate(optax.adam(1e-3).init({'w': jnp.ones(2)})) is None


class _Estimator:
  def __init__(self, model_dir):
    self.model_dir = model_dir


def test_summary_saver_hook_writes_values_speed_and_learning_rate(tmp_path):
  """The hook alone, driven as the loop drives it: values only on write steps."""
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.5)

  class State:
    opt_state = tx.init({'w': jnp.ones(2)})

  hook = SummarySaverHook(save_steps=5)
  ctx = RunContext(_Estimator(str(tmp_path)), 0, State())
  ctx.examples_per_step = 32
  hook.begin(ctx)
  for step in range(1, 11):
    ctx.step = step
    ctx.values = ({'loss': np.float32(step), 'global_step': np.int32(step),
                   'accuracy': np.float32(0.5), 'confusion': np.eye(2)}
                  if step % 5 == 0 else {})
    hook.after_step(ctx)
  scalars = summary.read_scalars(str(tmp_path))
  assert sorted(scalars) == ['accuracy', 'examples/sec', 'global_step/sec', 'learning_rate',
                             'loss']
  assert scalars['loss'] == [(5, 5.0), (10, 10.0)]
  assert scalars['learning_rate'] == [(5, 0.5), (10, 0.5)]
  [(step, rate)] = scalars['global_step/sec']  # none at the first write
  [(_, examples_rate)] = scalars['examples/sec']
  assert step == 10 and rate > 0
  np.testing.assert_allclose(examples_rate, 32 * rate, rtol=1e-5)


def test_summary_saver_hook_with_a_summary_writer_object():
  class Recorder:
    def __init__(self):
      self.calls = []

    def write_scalars(self, step, scalars):
      self.calls.append((step, scalars))

  recorder = Recorder()
  hook = SummarySaverHook(save_steps=5, summary_writer=recorder)
  ctx = RunContext(_Estimator('/nonexistent'), 0)
  hook.begin(ctx)
  ctx.step, ctx.values = 5, {'loss': np.float32(0.5), 'global_step': 5, 'confusion': np.eye(2)}
  hook.after_step(ctx)
  assert recorder.calls == [(5, {'loss': 0.5})]


def _linear_model_fn(features, labels, mode):
  pred = nn.Dense(1, kernel_init=nn.initializers.ones, bias_init=nn.initializers.zeros)(
      features['x'])[:, 0]
  loss = jnp.mean((pred - labels) ** 2)
  metrics = {'mse': je.metrics.Mean.from_model_output(values=(pred - labels) ** 2)}
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.05)
  return je.EstimatorSpec(mode, loss=loss, predictions=pred, optimizer=tx,
                          eval_metrics=metrics)


def _sgd_losses(x, y, steps, lr=0.05):
  """The loss of each step of `_linear_model_fn` on one repeated batch, by hand."""
  w, b, losses = np.ones(2, np.float64), 0.0, []
  for _ in range(steps):
    err = x @ w + b - y
    losses.append(np.mean(err ** 2))
    w, b = w - lr * 2 * x.T @ err / len(y), b - lr * 2 * err.mean()
  return np.array(losses)


def test_summary_saver_hook_end_to_end(model_dir):
  x = np.array([[1.0, 2.0], [3.0, -1.0]] * 4, np.float32)
  y = np.array([1.0, 0.0] * 4, np.float32)
  config = je.RunConfig(save_summary_steps=None)
  est = je.Estimator(_linear_model_fn, model_dir, config=config)
  est.train(lambda: tf.data.Dataset.from_tensors(({'x': x}, y)).repeat(), max_steps=10,
            hooks=[SummarySaverHook(save_steps=5)])
  scalars = summary.read_scalars(model_dir)
  assert sorted(scalars) == ['examples/sec', 'global_step/sec', 'learning_rate', 'loss', 'mse']
  losses = _sgd_losses(x, y, 10)  # step s's loss: before its update
  np.testing.assert_allclose([v for _, v in scalars['loss']], losses[[4, 9]], rtol=1e-5)
  assert [s for s, _ in scalars['loss']] == [5, 10]
  np.testing.assert_allclose(scalars['learning_rate'], [(5, 0.05), (10, 0.05)], rtol=1e-6)
  [(step, per_sec)] = scalars['global_step/sec']
  assert step == 10 and per_sec > 0
  np.testing.assert_allclose(scalars['examples/sec'], [(10, 8 * per_sec)], rtol=1e-5)
  # Train metrics aggregate since they were last fetched: steps 1-5, then 6-10.
  np.testing.assert_allclose(scalars['mse'], [(5, losses[:5].mean()), (10, losses[5:].mean())],
                             rtol=1e-5)


def test_summary_saver_hook_save_secs_0_writes_every_step(model_dir):
  x = np.array([[1.0, 2.0], [3.0, -1.0]] * 4, np.float32)
  y = np.array([1.0, 0.0] * 4, np.float32)
  est = je.Estimator(_linear_model_fn, model_dir, config=je.RunConfig(save_summary_steps=None))
  est.train(lambda: tf.data.Dataset.from_tensors(({'x': x}, y)).repeat(), max_steps=4,
            hooks=[SummarySaverHook(save_secs=0)])
  loss = summary.read_scalars(model_dir)['loss']
  np.testing.assert_allclose(loss, [(s, l) for s, l in enumerate(_sgd_losses(x, y, 4), 1)],
                             rtol=1e-5)
