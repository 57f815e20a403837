"""mixed_bfloat16: bfloat16 compute, float32 master parameters and outputs, close to float32."""

import jax.numpy as jnp
import numpy as np
import pytest

import jestimator as je
from models import make_data, mlp_model_fn, params_of


def test_mixed_bfloat16_computes_in_bf16_and_keeps_float32_state(tmp_path):
  x, y = make_data(512)
  seen = []

  def model_fn(features, labels, mode, params):
    seen.append(features['x'].dtype)
    return mlp_model_fn(features, labels, mode, params)

  batches = lambda: [({'x': x[i:i + 64]}, y[i:i + 64]) for i in range(0, 512, 64)] * 4
  out = {}
  for precision in ('float32', 'mixed_bfloat16'):
    est = je.Estimator(model_fn, str(tmp_path / precision), je.RunConfig(precision=precision),
                       {'batch_norm': True})
    est.train(batches, max_steps=30)
    out[precision] = (est, est.evaluate(lambda: [({'x': x}, y)]))
  assert jnp.bfloat16 in seen and jnp.float32 in seen
  mixed, f32 = out['mixed_bfloat16'], out['float32']
  for name, value in params_of(mixed[0]).items():
    assert value.dtype == (np.int64 if name == 'global_step' else np.float32), name
  assert mixed[1]['loss'].dtype == np.float32
  (step,) = mixed[0]._runner._train.values()
  assert step._cache_size() == 1  # batch stats keep their dtype: no retrace
  np.testing.assert_allclose(mixed[1]['loss'], f32[1]['loss'], rtol=5e-2)
  assert abs(mixed[1]['accuracy'] - f32[1]['accuracy']) < 0.05


def test_unknown_precision_is_an_error():
  with pytest.raises(ValueError, match='precision must be one of'):
    je.Estimator(mlp_model_fn, config=je.RunConfig(precision='fp8'))
