"""`jestimator.layers`: the DNN block and tf.contrib-style `stack` / `fully_connected`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jestimator.layers as layers


def test_dnn_block_layers_and_names():
  x = jnp.ones((4, 3))
  dnn = layers.DNN([5, 2], batch_norm=True)
  variables = dnn.init(jax.random.PRNGKey(0), x)
  params = variables['params']
  assert sorted(params) == ['batchnorm_0', 'batchnorm_1', 'hiddenlayer_0', 'hiddenlayer_1']
  assert params['hiddenlayer_0']['kernel'].shape == (3, 5)
  assert sorted(variables['batch_stats']['batchnorm_1']) == ['mean', 'var']
  out, updates = dnn.apply(variables, x, train=True, mutable=['batch_stats'])
  assert out.shape == (4, 2)
  # tf's momentum 0.999: one step moves the running mean by 0.001 of the batch mean.
  batch_mean = np.asarray(updates['batch_stats']['batchnorm_0']['mean'])
  assert np.all(np.abs(batch_mean) <= 0.001 * np.abs(np.asarray(
      jax.nn.relu(x @ params['hiddenlayer_0']['kernel']))).max() + 1e-7)


def test_dnn_dropout_only_in_training():
  x = jnp.ones((8, 16))
  dnn = layers.DNN([16], dropout=0.5)
  variables = dnn.init(jax.random.PRNGKey(0), x)
  rngs = {'dropout': jax.random.PRNGKey(1)}
  train = dnn.apply(variables, x, train=True, rngs=rngs)
  assert np.mean(np.asarray(train) == 0) > 0.2
  np.testing.assert_array_equal(dnn.apply(variables, x), dnn.apply(variables, x, train=False))


def test_stack_of_fully_connected_as_in_tf_contrib():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      return layers.stack(x, layers.fully_connected, [50, 50, (1, None)])

  x = jnp.ones((2, 7))
  variables = Model().init(jax.random.PRNGKey(0), x)
  shapes = {k: v['kernel'].shape for k, v in variables['params'].items()}
  assert shapes == {'Dense_0': (7, 50), 'Dense_1': (50, 50), 'Dense_2': (50, 1)}
  out = Model().apply(variables, x)
  assert out.shape == (2, 1)
