"""Estimator.train: exact numbers, step semantics, compile-once, device-count equality."""

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


def linear_model_fn(features, labels, mode):
  pred = nn.Dense(1, kernel_init=nn.initializers.ones, bias_init=nn.initializers.zeros)(
      features['x'])[:, 0]
  loss = jnp.mean((pred - labels) ** 2)
  return je.EstimatorSpec(mode, loss=loss, predictions=pred, optimizer=optax.sgd(0.1))


def test_sgd_step_matches_hand_computation(model_dir):
  x = np.array([[1.0, 2.0], [3.0, -1.0]] * 4, np.float32)
  y = np.array([1.0, 0.0] * 4, np.float32)
  est = je.Estimator(linear_model_fn, model_dir)
  est.train(lambda: [({'x': x}, y)], max_steps=1)
  # pred = x @ [1, 1] = [3, 2]; d(mean sq err)/dw = 2/n * x^T (pred - y)
  err = x.sum(1) - y
  grad_w = 2 * x.T @ err / len(y)
  grad_b = 2 * err.mean()
  np.testing.assert_allclose(est.get_variable_value('params/Dense_0/kernel')[:, 0],
                             1.0 - 0.1 * grad_w, rtol=1e-6)
  np.testing.assert_allclose(est.get_variable_value('params/Dense_0/bias'), [-0.1 * grad_b],
                             rtol=1e-6)
  assert est.get_variable_value('global_step') == 1


def _input(x, y, epochs=None, batch=32, seed=0):
  def input_fn():
    ds = tf.data.Dataset.from_tensor_slices(({'x': x}, y)).shuffle(256, seed=seed)
    return ds.repeat(epochs).batch(batch, drop_remainder=True)
  return input_fn


def test_steps_and_max_steps_semantics(model_dir):
  x, y = make_data(256)
  est = je.Estimator(mlp_model_fn, model_dir, params={})
  with pytest.raises(ValueError, match='Can not provide both steps and max_steps'):
    est.train(_input(x, y), steps=1, max_steps=2)
  with pytest.raises(ValueError, match='steps > 0'):
    est.train(_input(x, y), steps=0)
  est.train(_input(x, y), steps=5)
  assert est.get_variable_value('global_step') == 5
  est.train(_input(x, y), steps=3)
  assert est.get_variable_value('global_step') == 8
  est.train(_input(x, y), max_steps=10)
  assert est.get_variable_value('global_step') == 10
  calls = []
  est.train(lambda: calls.append(1), max_steps=10)  # reached: input_fn never called
  assert calls == [] and est.get_variable_value('global_step') == 10


def test_training_stops_cleanly_at_end_of_finite_input(model_dir):
  x, y = make_data(256)
  est = je.Estimator(mlp_model_fn, model_dir, params={})
  est.train(_input(x, y, epochs=1, batch=64), max_steps=100)
  assert est.get_variable_value('global_step') == 4


def test_train_step_compiles_once_over_100_steps(model_dir):
  x, y = make_data(512)
  traces = []

  def model_fn(features, labels, mode, params):
    traces.append(mode)
    return mlp_model_fn(features, labels, mode, params)

  est = je.Estimator(model_fn, model_dir, params={'dropout': 0.1},
                     config=je.RunConfig(log_step_count_steps=10))
  est.train(_input(x, y), max_steps=100)
  (step_fn,) = est._runner._train.values()
  assert step_fn._cache_size() == 1
  # one abstract trace for the optimizer, one for init, one for the step
  assert traces.count('train') == 3


@pytest.mark.parametrize('batch_norm', [False, True])
def test_one_device_equals_eight_devices(tmp_path, batch_norm):
  x, y = make_data(512)
  params = {'dropout': 0.2, 'batch_norm': batch_norm}
  results = []
  for mesh in (one_device_mesh(), None):
    config = je.RunConfig(mesh=mesh, seed=3)
    est = je.Estimator(mlp_model_fn, str(tmp_path / str(mesh is None)), config, params)
    est.train(_input(x, y), max_steps=20)
    results.append(params_of(est))
  assert len(jax.devices()) == 8
  for name in results[0]:
    np.testing.assert_allclose(results[0][name], results[1][name], atol=1e-5, rtol=1e-5,
                               err_msg=name)
  if batch_norm:
    assert not np.allclose(results[0]['batch_stats/BatchNorm_0/mean'], 0.0)


def test_seed_and_dropout_rng_determine_the_result(tmp_path):
  x, y = make_data(256)
  out = []
  for i, seed in enumerate((1, 1, 2)):
    est = je.Estimator(mlp_model_fn, str(tmp_path / str(i)), je.RunConfig(seed=seed),
                       {'dropout': 0.5})
    est.train(_input(x, y), max_steps=5)
    out.append(est.get_variable_value('params/Dense_0/kernel'))
  np.testing.assert_array_equal(out[0], out[1])
  assert not np.allclose(out[0], out[2])


def test_user_module_subclass_inside_model_fn(model_dir):
  class Tower(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
      return nn.Dense(1)(nn.tanh(nn.Dense(self.width)(x)))[:, 0]

  def model_fn(features, labels, mode):
    pred = Tower(4, name='tower')(features['x'])
    return je.EstimatorSpec(mode, loss=jnp.mean((pred - labels) ** 2), predictions=pred,
                            optimizer=optax.adam(0.05))

  x = np.random.RandomState(0).randn(64, 3).astype(np.float32)
  y = x.sum(1)
  est = je.Estimator(model_fn, model_dir)
  est.train(je.inputs.numpy_input_fn({'x': x}, y, batch_size=64, num_epochs=None,
                                     shuffle=False), max_steps=200)
  assert 'params/tower/Dense_1/kernel' in est.get_variable_names()
  before = est.evaluate(je.inputs.numpy_input_fn({'x': x}, y, batch_size=64, shuffle=False))
  assert before['loss'] < 0.1 * float(np.var(y))
