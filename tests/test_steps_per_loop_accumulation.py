"""steps_per_loop (K steps per dispatch) and gradient accumulation: same numbers as plain."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je
from models import make_data, mlp_model_fn, params_of


def _input(x, y, batch=32):
  def input_fn():
    ds = tf.data.Dataset.from_tensor_slices(({'x': x}, y)).shuffle(256, seed=0)
    return ds.repeat().batch(batch, drop_remainder=True)
  return input_fn


def _assert_close(a, b):
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_steps_per_loop_8_equals_1_and_lands_checkpoints_on_their_steps(tmp_path):
  x, y = make_data(512)
  params = {'dropout': 0.2, 'batch_norm': True}
  out = {}
  for k in (1, 8):
    config = je.RunConfig(steps_per_loop=k, save_checkpoints_steps=8, keep_checkpoint_max=None,
                          log_step_count_steps=12)
    est = je.Estimator(mlp_model_fn, str(tmp_path / str(k)), config, params)
    est.train(_input(x, y), max_steps=21)
    out[k] = est
  _assert_close(params_of(out[1]), params_of(out[8]))
  assert out[8]._checkpoints().all_steps() == [8, 16, 21]
  # tf.data stacks 8 batches per element; the log at 12 and the last step 21 cut elements
  # into spans (8-12, 12-16, 16-21) of the same executable: no single step is compiled
  executables = {key[1]: fn._cache_size() for key, fn in out[8]._runner._train.items()}
  assert executables == {False: 0, True: 1}


def test_steps_per_loop_resumes_exactly(tmp_path):
  x, y = make_data(512)
  config = je.RunConfig(steps_per_loop=4, save_checkpoints_steps=100)
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, {})
  whole.train(_input(x, y), max_steps=12)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, {})
  split.train(_input(x, y), max_steps=5)
  split.train(_input(x, y), max_steps=12)
  _assert_close(params_of(whole), params_of(split))


def test_input_ending_mid_loop_trains_every_batch(model_dir):
  x, y = make_data(256)
  est = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(steps_per_loop=3), {})
  est.train(lambda: [({'x': x[:32]}, y[:32])] * 7, max_steps=100)
  assert est.get_variable_value('global_step') == 7


def sgd_model_fn(features, labels, mode):
  pred = nn.Dense(1)(nn.tanh(nn.Dense(8)(features['x'])))[:, 0]
  return je.EstimatorSpec(mode, loss=jnp.mean((pred - labels) ** 2), predictions=pred,
                          optimizer=optax.sgd(0.1))


def test_accumulating_4_micro_batches_equals_one_big_batch(tmp_path):
  rng = np.random.RandomState(0)
  x = rng.randn(256, 5).astype(np.float32)
  y = x.sum(1)
  runs = {}
  for accumulate in (1, 4):
    config = je.RunConfig(gradient_accumulation_steps=accumulate)
    est = je.Estimator(sgd_model_fn, str(tmp_path / str(accumulate)), config)
    est.train(lambda: [({'x': x[i:i + 64]}, y[i:i + 64]) for i in range(0, 256, 64)],
              max_steps=4)
    runs[accumulate] = params_of(est)
  _assert_close(runs[1], runs[4])


def test_accumulation_must_divide_the_batch(model_dir):
  x, y = make_data(64)
  est = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(gradient_accumulation_steps=3), {})
  with pytest.raises(ValueError, match='gradient_accumulation_steps 3 does not divide the '
                                       'batch size 32'):
    est.train(lambda: [({'x': x[:32]}, y[:32])], max_steps=1)
