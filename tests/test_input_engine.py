"""The input engine: exact resume for every input kind, only into the same input;
the background feeder; K batches per tf.data element; partial last batches."""

import threading
import traceback

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je
from conftest import one_device_mesh
from models import make_data, mlp_model_fn, params_of

PARAMS = {'dropout': 0.3, 'batch_norm': True}
X, Y = make_data(320)


def _assert_same(a, b):
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _feeder_threads():
  return [t for t in threading.enumerate() if t.name.startswith('jestimator-') and t.is_alive()]


def generator_input_fn():
  """from_generator: the iterator state cannot be serialized (PyFunc)."""
  def gen():
    rng = np.random.RandomState(3)
    while True:
      i = rng.randint(0, 320 - 32)
      yield {'x': X[i:i + 32]}, Y[i:i + 32]
  spec = ({'x': tf.TensorSpec((32, 8), tf.float32)}, tf.TensorSpec((32,), tf.int32))
  return tf.data.Dataset.from_generator(gen, output_signature=spec)


def py_function_input_fn():
  ds = tf.data.Dataset.from_tensor_slices(({'x': X}, Y)).repeat().batch(32, drop_remainder=True)
  double = lambda f, y: ({'x': tf.py_function(lambda v: v * 2.0, [f['x']], tf.float32)}, y)
  return ds.map(double).map(lambda f, y: ({'x': tf.ensure_shape(f['x'], (32, 8))}, y))


def shuffled_input_fn():
  ds = tf.data.Dataset.from_tensor_slices(({'x': X}, Y)).shuffle(100, seed=7)
  return ds.repeat().batch(32, drop_remainder=True).prefetch(2)


@pytest.mark.parametrize('make_input', [generator_input_fn, py_function_input_fn])
def test_unserializable_pipelines_checkpoint_and_resume_exactly(tmp_path, make_input):
  config = je.RunConfig(save_checkpoints_steps=4, keep_checkpoint_max=2)
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, PARAMS)
  whole.train(make_input, max_steps=10)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  split.train(make_input, max_steps=5)
  assert split.latest_checkpoint().endswith('/5')  # the save did not fail
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)  # from disk
  split.train(make_input, max_steps=10)
  _assert_same(params_of(whole), params_of(split))


class Recorder(nn.Module):
  """Keeps the last training batch's first value of x in the 'batch_stats' collection."""

  @nn.compact
  def __call__(self, x, train):
    seen = self.variable('batch_stats', 'seen', lambda: jnp.zeros((), jnp.float32))
    if train and not self.is_initializing():
      seen.value = x[0, 0]
    return x


def recording_model_fn(features, labels, mode):
  x = Recorder()(features['x'], mode == je.ModeKeys.TRAIN)
  pred = nn.Dense(1)(x)[:, 0]
  loss = jnp.mean((pred - labels) ** 2)
  return je.EstimatorSpec(mode, loss=loss, predictions=pred, optimizer=optax.sgd(0.0))


def _range_input(lo, hi):
  def input_fn():
    ds = tf.data.Dataset.range(lo, hi).map(lambda v: tf.cast(v, tf.float32))
    return ds.map(lambda v: ({'x': tf.fill([1, 1], v)}, tf.fill([1], v)))
  return input_fn


def _seen(est):
  return float(est.get_variable_value('batch_stats/Recorder_0/seen'))


def _recording_estimator(model_dir):
  config = je.RunConfig(mesh=one_device_mesh(), save_checkpoints_steps=100)
  return je.Estimator(recording_model_fn, model_dir, config)


@pytest.mark.parametrize('new_estimator', [False, True])
def test_another_input_fn_starts_at_its_own_first_batch(model_dir, new_estimator, caplog):
  est = _recording_estimator(model_dir)
  est.train(_range_input(0, 1000), max_steps=3)
  assert _seen(est) == 2.0
  if new_estimator:
    est = _recording_estimator(model_dir)
  with caplog.at_level('INFO', logger='jestimator'):
    est.train(_range_input(5000, 6000), max_steps=5)
  assert _seen(est) == 5001.0  # B's own batches 5000, 5001 -- not A's position applied to B
  assert 'starts at its own first batch' in caplog.text
  est.train(_range_input(5000, 6000), max_steps=7)  # the same input resumes
  assert _seen(est) == 5003.0


def test_resume_input_false_restarts_the_same_input(model_dir):
  est = _recording_estimator(model_dir)
  est.train(_range_input(0, 1000), max_steps=3)
  est.train(_range_input(0, 1000), max_steps=5, resume_input=False)
  assert _seen(est) == 1.0
  est = _recording_estimator(model_dir)
  est.train(_range_input(0, 1000), max_steps=6)  # resumes the position saved at 5
  assert _seen(est) == 2.0


def test_a_new_python_iterable_is_not_skipped(model_dir):
  est = _recording_estimator(model_dir)
  batches = lambda lo: [({'x': np.full((1, 1), v, np.float32)}, np.full(1, v, np.float32))
                        for v in range(lo, lo + 50)]
  est.train(lambda: batches(0), max_steps=3)
  other = lambda: batches(100)
  est.train(other, max_steps=4)
  assert _seen(est) == 100.0


def test_tensor_returning_input_fn_trains_evaluates_and_predicts(model_dir):
  def input_fn():  # the tf.estimator tutorial style: one batch of constant tensors
    return {'x': tf.constant(X[:32])}, tf.constant(Y[:32])

  est = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(), {'learning_rate': 0.05})
  est.train(input_fn, max_steps=30)  # the same batch re-run every step
  assert int(est.get_variable_value('global_step')) == 30
  metrics = est.evaluate(input_fn)  # run once
  assert metrics['accuracy'] > 0.8
  preds = list(est.predict(lambda: {'x': X[:5]}))
  assert len(preds) == 5 and set(preds[0]) == {'class_ids', 'logits'}


def test_sparse_tensor_input_is_named(model_dir):
  def input_fn():
    sparse = tf.sparse.from_dense(tf.constant([[1.0, 0.0]] * 8))
    return {'x': tf.constant(X[:8]), 'tags': sparse}, tf.constant(Y[:8])

  est = je.Estimator(mlp_model_fn, model_dir)
  with pytest.raises(TypeError, match="'features/tags' is a SparseTensor"):
    est.train(input_fn, steps=1)


def test_feeder_errors_surface_with_the_inputs_traceback(model_dir):
  def broken_generator():
    for i in range(100):
      if i == 6:
        raise ValueError('bad record 6')
      yield {'x': X[:32]}, Y[:32]

  est = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(save_checkpoints_steps=4))
  with pytest.raises(ValueError, match='bad record 6') as info:
    est.train(broken_generator, max_steps=50)
  frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
  assert 'broken_generator' in frames
  assert not _feeder_threads()
  assert est.latest_checkpoint().endswith('/4')  # saved before the failure, kept


def test_no_feeder_thread_is_left_after_train_evaluate_predict(model_dir):
  est = je.Estimator(mlp_model_fn, model_dir,  # summaries are written on their own thread
                     je.RunConfig(save_checkpoints_steps=5, save_summary_steps=3))
  est.train(shuffled_input_fn, max_steps=12)
  assert not _feeder_threads()
  assert [step for step, _ in je.summary.read_scalars(model_dir)['loss']] == [3, 6, 9, 12]
  est.evaluate(lambda: tf.data.Dataset.from_tensor_slices(({'x': X}, Y)).batch(50))
  preds = est.predict(lambda: tf.data.Dataset.from_tensor_slices({'x': X}).batch(50))
  next(preds)
  preds.close()  # a predict loop left early
  assert not _feeder_threads()


@pytest.mark.parametrize('k,log,save', [(4, 8, 8), (4, 10, 6), (3, 5, None)])
def test_k_stacked_feeding_equals_one_step_per_dispatch(tmp_path, k, log, save):
  base = dict(log_step_count_steps=log, save_checkpoints_steps=save,
              save_checkpoints_secs=None if save else 3600)
  one = je.Estimator(mlp_model_fn, str(tmp_path / 'one'), je.RunConfig(**base), PARAMS)
  one.train(shuffled_input_fn, max_steps=23)
  stacked = je.Estimator(mlp_model_fn, str(tmp_path / 'k'),
                         je.RunConfig(steps_per_loop=k, **base), PARAMS)
  stacked.train(shuffled_input_fn, max_steps=13)
  stacked = je.Estimator(mlp_model_fn, str(tmp_path / 'k'),  # resumes from disk
                         je.RunConfig(steps_per_loop=k, **base), PARAMS)
  stacked.train(shuffled_input_fn, max_steps=23)
  for name, value in params_of(one).items():
    np.testing.assert_allclose(stacked.get_variable_value(name), value, rtol=2e-5, atol=2e-6,
                               err_msg=name)


@pytest.mark.parametrize('background', [True, False])
def test_hook_stop_between_pause_points_resumes_exactly(tmp_path, monkeypatch, background):
  """The feeder's read-ahead is handed back: the saved position is the consumed one."""
  import jestimator.train_loop
  monkeypatch.setattr(jestimator.train_loop, 'background_pays', lambda pipeline: background)
  config = je.RunConfig(save_checkpoints_steps=10, prefetch_batches=3)
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, PARAMS)
  whole.train(shuffled_input_fn, max_steps=16)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  split.train(shuffled_input_fn, max_steps=100, hooks=[je.hooks.StopAtStepHook(last_step=7)])
  assert split.latest_checkpoint().endswith('/7')
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  split.train(shuffled_input_fn, max_steps=16)
  _assert_same(params_of(whole), params_of(split))


def test_repeated_train_calls_continue_without_restoring(tmp_path, monkeypatch):
  config = je.RunConfig(save_checkpoints_steps=100)
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, PARAMS)
  whole.train(shuffled_input_fn, max_steps=12)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  split.train(shuffled_input_fn, steps=4)
  store = split._checkpoints()

  def no_restore(*args, **kwargs):
    raise AssertionError('restored from disk although memory held the newest checkpoint')

  monkeypatch.setattr(store, 'restore_state', no_restore)
  monkeypatch.setattr(store, 'restore_input', no_restore)
  split.train(shuffled_input_fn, steps=4)
  split.train(shuffled_input_fn, steps=4)
  _assert_same(params_of(whole), params_of(split))


def test_last_partial_batch_is_dropped_with_a_warning_and_steps_are_saved(model_dir, caplog):
  def input_fn():  # 100 examples, batch 32: the last batch (4) does not divide 8 devices
    return tf.data.Dataset.from_tensor_slices(({'x': X[:100]}, Y[:100])).batch(32)

  est = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(save_checkpoints_steps=100))
  with caplog.at_level('WARNING', logger='jestimator'):
    est.train(input_fn)
  assert 'Dropped a training batch of 4 examples' in caplog.text
  assert int(est.get_variable_value('global_step')) == 3
  assert est.latest_checkpoint().endswith('/3')


@pytest.mark.parametrize('make', [
    lambda: tf.data.Dataset.from_tensor_slices(({'x': X, 'z': X[:, :2]}, Y)).batch(64),
    lambda: tf.data.Dataset.from_tensor_slices({'x': X, 'name': tf.as_string(Y)}).batch(100),
    lambda: tf.data.Dataset.from_tensor_slices((X, (Y, Y * 2))).batch(100),
], ids=['dict-and-labels', 'strings-ragged-tail', 'nested-tuples'])
def test_fast_next_gives_tf_datas_own_elements(make):
  from jestimator.inputs import tf_next  # pylint: disable=import-outside-toplevel
  fast = tf_next.fast_next(iter(make()))
  expected = list(make().as_numpy_iterator())
  for want in expected:
    got = fast()
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert a.dtype == b.dtype
      np.testing.assert_array_equal(a, b)
  with pytest.raises(tf.errors.OutOfRangeError):
    fast()


def test_csv_columns_keep_their_values(tmp_path):
  """make_csv_dataset's OrderedDict: TF flattens its keys sorted, jax in column order."""
  from jestimator.inputs import pipeline, tf_next  # pylint: disable=import-outside-toplevel
  (tmp_path / 'data.csv').write_text('zeta,alpha,label\n1,2,0\n3,4,1\n')
  make = lambda: tf.data.experimental.make_csv_dataset(
      str(tmp_path / 'data.csv'), batch_size=2, label_name='label', shuffle=False, num_epochs=1)
  assert tf_next.fast_next(iter(make())) is None
  features, labels = pipeline.InputPipeline(make(), je.ModeKeys.EVAL).next_batch()
  np.testing.assert_array_equal(features['zeta'], [1, 3])
  np.testing.assert_array_equal(features['alpha'], [2, 4])
  np.testing.assert_array_equal(labels, [0, 1])


def test_fast_next_leaves_other_element_specs_to_next():
  from jestimator.inputs import tf_next  # pylint: disable=import-outside-toplevel
  ragged = tf.data.Dataset.from_tensor_slices(tf.ragged.constant([[1], [2, 3]])).batch(2)
  assert tf_next.fast_next(iter(ragged)) is None


def test_evaluate_and_predict_do_not_fingerprint_their_input(model_dir, monkeypatch):
  """They never save a position; hashing a dataset's graph and constants is their largest
  fixed cost (a tenth of an evaluate() of 65k examples)."""
  est = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(), PARAMS)
  est.train(shuffled_input_fn, max_steps=2)
  from jestimator.inputs import fingerprint  # pylint: disable=import-outside-toplevel

  def refuse(dataset):
    raise AssertionError('fingerprinted')
  monkeypatch.setattr(fingerprint, 'dataset_fingerprint', refuse)
  est.evaluate(lambda: tf.data.Dataset.from_tensor_slices(({'x': X}, Y)).batch(64))
  assert len(list(est.predict(lambda: tf.data.Dataset.from_tensor_slices({'x': X}).batch(64)))) == 320
  with pytest.raises(AssertionError, match='fingerprinted'):
    est.train(shuffled_input_fn, max_steps=4)


def test_fingerprint_is_stable_across_rebuilds_and_tells_inputs_apart():
  from jestimator.inputs.fingerprint import dataset_fingerprint as fingerprint
  import test_feature_column_estimator as fc_test
  from jestimator.inputs.host_transform import apply_to_dataset

  feats, y = fc_test.data()
  transforms = fc_test.estimator(None)._transforms  # vocabulary tables, hashes, crosses
  with_columns = lambda: apply_to_dataset(fc_test.input_fn(feats, y)(), transforms, 'train')
  for make in (shuffled_input_fn, generator_input_fn, py_function_input_fn, with_columns):
    assert fingerprint(make()) == fingerprint(make()), make
  assert fingerprint(_range_input(0, 1000)()) != fingerprint(_range_input(5000, 6000)())
  x = np.arange(10.0)
  assert fingerprint(tf.data.Dataset.from_tensor_slices(x)) != fingerprint(
      tf.data.Dataset.from_tensor_slices(x + 1))  # constants are part of the input


def test_progress_bar_auto_draws_only_in_a_terminal_or_notebook(monkeypatch):
  import io
  import sys
  from jestimator import reporting
  assert je.RunConfig().progress_bar == 'auto'
  monkeypatch.setattr(sys, 'stderr', io.StringIO())  # a CI log: no bar
  assert reporting.progress_bar(10, 'train', 'step', 'auto').disable
  monkeypatch.setattr(sys.stderr, 'isatty', lambda: True, raising=False)
  with reporting.progress_bar(10, 'train', 'step', 'auto') as bar:
    assert not bar.disable
  with pytest.raises(ValueError, match="progress_bar must be True, False or 'auto'"):
    je.RunConfig(progress_bar='yes')


def test_features_and_labels_with_different_batch_sizes_are_named_on_the_host(model_dir):
  est = je.Estimator(mlp_model_fn, model_dir)
  mismatched = lambda: [({'x': X[:32]}, Y[:31])]
  with pytest.raises(ValueError, match="feature 'x' has 32 examples but labels has 31"):
    est.train(mismatched, steps=1)


def test_a_state_that_fails_to_serialize_at_save_time_degrades_to_replay(tmp_path, monkeypatch,
                                                                        caplog):
  """A save never fails because of the input, even if serializing fails only later."""
  from jestimator.inputs import pipeline as pipeline_module
  real = pipeline_module.InputPipeline.capture

  def failing_capture(self):
    if self.kind == 'tf.data':
      monkeypatch.setattr(self._iterator, '_serialize_to_tensors', lambda: (_ for _ in ()).throw(
          tf.errors.FailedPreconditionError(None, None, 'SomeOp is stateful')))
    return real(self)

  monkeypatch.setattr(pipeline_module.InputPipeline, 'capture', failing_capture)
  config = je.RunConfig(save_checkpoints_steps=4)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  with caplog.at_level('WARNING', logger='jestimator'):
    split.train(shuffled_input_fn, max_steps=6)
  assert 'SomeOp is stateful' in caplog.text and split.latest_checkpoint().endswith('/6')
  monkeypatch.setattr(pipeline_module.InputPipeline, 'capture', real)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  split.train(shuffled_input_fn, max_steps=10)  # replays 6 batches: the seeded shuffle repeats
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, PARAMS)
  whole.train(shuffled_input_fn, max_steps=10)
  _assert_same(params_of(whole), params_of(split))


def test_default_log_cadence_is_a_multiple_of_steps_per_loop():
  assert je.RunConfig().log_step_count_steps == 100
  assert je.RunConfig(steps_per_loop=16).log_step_count_steps == 112  # no dispatch is cut
  assert je.RunConfig(steps_per_loop=16, log_step_count_steps=50).log_step_count_steps == 50
  assert je.RunConfig(log_step_count_steps=None).log_step_count_steps is None
  assert je.RunConfig().save_summary_steps == 100
  assert je.RunConfig(steps_per_loop=16).save_summary_steps == 112
  assert je.RunConfig(steps_per_loop=16, save_summary_steps=None).save_summary_steps is None
