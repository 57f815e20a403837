"""The shard_map runner (explicit collectives) agrees with the jit runner."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jestimator as je
from models import params_of


def sgd_model_fn(features, labels, mode):
  """SGD, not Adam: an N-times-too-large gradient would show, not be normalised away."""
  h = nn.tanh(nn.Dense(16)(features['x']))
  pred = nn.Dense(1)(h)[:, 0]
  loss = jnp.mean((pred - labels) ** 2)
  return je.EstimatorSpec(mode, loss=loss, predictions=pred, optimizer=optax.sgd(0.05),
                          eval_metrics={'mse': je.metrics.Mean.from_model_output(
                              (pred - labels) ** 2)})


def _data():
  rng = np.random.RandomState(0)
  x = rng.randn(256, 6).astype(np.float32)
  return [({'x': x[i:i + 32]}, np.sin(x[i:i + 32].sum(1))) for i in range(0, 256, 32)]


@pytest.mark.parametrize('extra', [{}, {'steps_per_loop': 4}, {'gradient_accumulation_steps': 2}])
def test_shard_map_equals_jit_with_sgd(tmp_path, extra):
  out = {}
  for runner in ('jit', 'shard_map'):
    est = je.Estimator(sgd_model_fn, str(tmp_path / runner), je.RunConfig(runner=runner, **extra))
    est.train(lambda: _data() * 2, max_steps=12)
    out[runner] = est
  a, b = params_of(out['jit']), params_of(out['shard_map'])
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
  evals = [out[r].evaluate(lambda: _data()[:2]) for r in ('jit', 'shard_map')]
  np.testing.assert_allclose(evals[0]['mse'], evals[1]['mse'], rtol=1e-5)


def test_shard_map_train_metrics_merge_across_devices(model_dir, caplog):
  import logging
  est = je.Estimator(sgd_model_fn, model_dir, je.RunConfig(runner='shard_map',
                                                           log_step_count_steps=1))
  with caplog.at_level(logging.INFO, logger='jestimator'):
    est.train(lambda: _data()[:1], max_steps=1)
  (logged,) = [l for l in caplog.messages if 'mse' in l]
  loss = float(logged.split('loss = ')[1].split(',')[0])
  mse = float(logged.split('mse = ')[1].split(' ')[0])
  assert mse == pytest.approx(loss, rel=1e-5)  # the mean over all 8 devices' examples


def test_shard_map_rejects_partition_rules(model_dir):
  with pytest.raises(ValueError, match='shard_map runner replicates the train state'):
    je.Estimator(sgd_model_fn, model_dir, je.RunConfig(runner='shard_map', partition_rules='fsdp'))
