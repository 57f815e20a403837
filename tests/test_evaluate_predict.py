"""evaluate counts every example once (padding masked); predict yields each in order."""

import logging

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
from flax import struct

import jestimator as je
from models import make_data, mlp_model_fn


@struct.dataclass
class Count(je.metrics.Metric):
  """A user-defined metric: how many (unpadded) examples were seen."""

  n: jnp.ndarray

  @classmethod
  def from_model_output(cls, values):
    return cls(n=je.metrics.batch_weights(values).sum())

  def merge(self, other):
    return Count(n=self.n + other.n)

  def compute(self):
    return self.n


def counting_model_fn(features, labels, mode, params):
  spec = mlp_model_fn(features, labels, mode, params)
  if mode != je.ModeKeys.EVAL:
    return spec
  return je.EstimatorSpec(mode, loss=spec.loss, predictions=spec.predictions, eval_metrics={
      **spec.eval_metrics, 'count': Count.from_model_output(features['x'][:, 0]),
      'id_sum': je.metrics.Mean.from_model_output(features['id'].astype(jnp.float32))})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  x, y = make_data(1000)
  est = je.Estimator(counting_model_fn, str(tmp_path_factory.mktemp('m')), params={})
  est.train(je.inputs.numpy_input_fn({'x': x, 'id': np.arange(1000)}, y, batch_size=64,
                                     num_epochs=None, shuffle=True), max_steps=30)
  return est, x, y


def test_evaluate_counts_each_of_1000_examples_once(trained):
  est, x, y = trained
  results = est.evaluate(je.inputs.numpy_input_fn({'x': x, 'id': np.arange(1000)}, y,
                                                  batch_size=64, shuffle=False))
  assert results['count'] == 1000  # 15 full batches + 40 real of the padded 16th
  np.testing.assert_allclose(results['id_sum'], np.arange(1000).mean(), rtol=1e-6)
  assert results['global_step'] == 30
  assert set(results) == {'accuracy', 'count', 'id_sum', 'loss', 'global_step'}
  preds = np.array([p['class_ids'] for p in est.predict(
      je.inputs.numpy_input_fn({'x': x, 'id': np.arange(1000)}, batch_size=64, shuffle=False))])
  np.testing.assert_allclose(results['accuracy'], np.mean(preds == y), rtol=1e-6)


def test_evaluate_loss_is_mean_of_per_batch_losses(model_dir):
  """tf.estimator's evaluate loss: each batch's mean loss, averaged over batches."""

  def model_fn(features, labels, mode):
    w = nn.Dense(1, use_bias=False, kernel_init=nn.initializers.ones)(features['x'])[:, 0]
    per_example = (w - labels) ** 2
    mask = je.example_mask()  # exact on the padded last batch
    loss = (per_example * mask).sum() / mask.sum() if mask is not None else per_example.mean()
    return je.EstimatorSpec(mode, loss=loss, predictions=w, optimizer=optax.sgd(0.0))

  x = np.arange(20, dtype=np.float32).reshape(20, 1)
  y = np.zeros(20, np.float32)
  est = je.Estimator(model_fn, model_dir)
  results = est.evaluate(je.inputs.numpy_input_fn({'x': x}, y, batch_size=8, shuffle=False))
  batch_losses = [np.mean(x[i:i + 8, 0] ** 2) for i in (0, 8, 16)]
  np.testing.assert_allclose(results['loss'], np.mean(batch_losses), rtol=1e-6)


def test_masked_mean_makes_a_hand_written_eval_loss_exact(model_dir):
  def model_fn(features, labels, mode):
    w = nn.Dense(1, use_bias=False, kernel_init=nn.initializers.ones)(features['x'])[:, 0]
    return je.EstimatorSpec(mode, loss=je.masked_mean((w - labels) ** 2), predictions=w,
                            optimizer=optax.sgd(0.0))

  x = np.arange(20, dtype=np.float32).reshape(20, 1)
  results = je.Estimator(model_fn, model_dir).evaluate(
      je.inputs.numpy_input_fn({'x': x}, np.zeros(20, np.float32), batch_size=8, shuffle=False))
  np.testing.assert_allclose(results['loss'],
                             np.mean([np.mean(x[i:i + 8, 0] ** 2) for i in (0, 8, 16)]),
                             rtol=1e-6)


def test_bad_checkpoint_path_and_hooks_are_refused(trained):
  est, x, y = trained
  fn = je.inputs.numpy_input_fn({'x': x[:64], 'id': np.arange(64)}, y[:64], batch_size=64,
                                shuffle=False)
  with pytest.raises(ValueError, match="expected '<model_dir>/<step>'"):
    est.evaluate(fn, checkpoint_path=est.model_dir + '/model.ckpt-30')
  with pytest.raises(TypeError, match=r'evaluate: hooks must be je.hooks.Hook .*got object'):
    est.evaluate(fn, hooks=[object()])


def test_evaluate_steps_limits_batches(trained):
  est, x, y = trained
  results = est.evaluate(je.inputs.numpy_input_fn({'x': x, 'id': np.arange(1000)}, y,
                                                  batch_size=64, shuffle=False), steps=3)
  assert results['count'] == 192


def test_predict_yields_1000_results_in_input_order(trained):
  est, x, _ = trained
  ids = np.arange(1000)
  out = list(est.predict(je.inputs.numpy_input_fn({'x': x, 'id': ids}, batch_size=64,
                                                  shuffle=False)))
  assert len(out) == 1000
  np.testing.assert_array_equal([p['id'] for p in out], ids)
  assert set(out[0]) == {'class_ids', 'logits', 'id'}


def test_predict_keys_and_batched_output(trained):
  est, x, _ = trained
  fn = je.inputs.numpy_input_fn({'x': x[:100], 'id': np.arange(100)}, batch_size=64,
                                shuffle=False)
  only = list(est.predict(fn, predict_keys=['class_ids']))
  assert set(only[0]) == {'class_ids'} and len(only) == 100
  batches = list(est.predict(fn, yield_single_examples=False))
  assert [len(b['logits']) for b in batches] == [64, 36]
  with pytest.raises(ValueError, match='Expected to run at least one output'):
    list(est.predict(fn, predict_keys=['nope']))


def test_evaluate_and_predict_without_checkpoint_warn_and_init(model_dir, caplog):
  x, y = make_data(64)
  est = je.Estimator(mlp_model_fn, model_dir, params={})
  with caplog.at_level(logging.WARNING, logger='jestimator'):
    results = est.evaluate(lambda: [({'x': x}, y)])
  assert 'Could not find trained model' in caplog.text
  assert results['global_step'] == 0 and np.isfinite(results['loss'])
  assert len(list(est.predict(lambda: [{'x': x}]))) == 64


def test_evaluate_uses_given_checkpoint_path(model_dir):
  x, y = make_data(256)
  est = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(save_checkpoints_steps=5), {})
  est.train(lambda: [({'x': x[:64]}, y[:64])] * 10, max_steps=10)
  eval_fn = lambda: [({'x': x}, y)]
  at5 = est.evaluate(eval_fn, checkpoint_path=est._checkpoints().path(5))
  at10 = est.evaluate(eval_fn)
  assert (at5['global_step'], at10['global_step']) == (5, 10)
  assert at5['loss'] > at10['loss']


def test_any_batch_size_evaluates_on_eight_devices(trained):
  """Batches the data axis does not divide are padded up (and masked), not rejected."""
  est, x, y = trained
  fn = lambda: [({'x': x[i:i + 30], 'id': np.arange(i, i + 30)}, y[i:i + 30])
                for i in range(0, 90, 30)]
  results = est.evaluate(fn)
  assert results['count'] == 90
  out = list(est.predict(lambda: [f for f, _ in fn()]))
  np.testing.assert_array_equal([p['id'] for p in out], np.arange(90))


def _plain_mean_model_fn(features, labels, mode):
  """A ported tf.estimator model_fn: a plain jnp.mean loss, no mask."""
  pred = nn.Dense(1)(features['x'])[:, 0]
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions=pred)
  loss = jnp.mean((pred - labels) ** 2)
  return je.EstimatorSpec(mode, loss=loss, predictions=pred, optimizer=optax.sgd(0.01))


@pytest.mark.parametrize('n,batch,mesh', [(100, 64, 'one'), (96, 64, 'eight')])
def test_plain_mean_loss_is_tf_estimators_mean_of_batch_means(tmp_path, n, batch, mesh):
  """The last partial batch runs at its own size: no padded rows in a plain mean."""
  from conftest import one_device_mesh
  rng = np.random.RandomState(0)
  x, y = rng.randn(n, 8).astype(np.float32), rng.randn(n).astype(np.float32)
  config = je.RunConfig(mesh=one_device_mesh() if mesh == 'one' else None)
  est = je.Estimator(_plain_mean_model_fn, str(tmp_path), config)
  est.train(lambda: tf.data.Dataset.from_tensor_slices(({'x': x}, y)).repeat().batch(32),
            max_steps=5)
  input_fn = lambda: tf.data.Dataset.from_tensor_slices(({'x': x}, y)).batch(batch)
  pred = np.array([p for p in est.predict(lambda: tf.data.Dataset.from_tensor_slices(
      {'x': x}).batch(batch))])
  per_batch = [np.mean((pred[i:i + batch] - y[i:i + batch]) ** 2) for i in range(0, n, batch)]
  got = est.evaluate(input_fn)['loss']
  np.testing.assert_allclose(got, np.mean(per_batch), rtol=1e-5)
  padded_last = np.concatenate([pred[64:], np.repeat(pred[-1:], 64 - (n - 64))])
  padded_y = np.concatenate([y[64:], np.repeat(y[-1:], 64 - (n - 64))])
  wrong = np.mean([per_batch[0], np.mean((padded_last - padded_y) ** 2)])
  assert abs(got - wrong) > 1e-3  # what padding the whole batch used to report


def test_padded_tail_warns_that_a_hand_written_loss_needs_masked_mean(tmp_path, caplog):
  rng = np.random.RandomState(0)
  x, y = rng.randn(100, 8).astype(np.float32), rng.randn(100).astype(np.float32)
  est = je.Estimator(_plain_mean_model_fn, str(tmp_path))  # 8 devices: 36 -> 40
  input_fn = lambda: tf.data.Dataset.from_tensor_slices(({'x': x}, y)).batch(64)
  with caplog.at_level('WARNING', logger='jestimator'):
    est.evaluate(input_fn)
  assert 'last evaluation batch of 36 examples is padded to 40' in caplog.text
  assert 'je.masked_mean' in caplog.text
