"""Bad input fails early with a message naming the problem (before compiling)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je
from models import make_data, mlp_model_fn


def batches(features, labels=None, n=2):
  return [(features, labels) if labels is not None else features] * n


X, Y = make_data(64)


@pytest.fixture
def trained(model_dir):
  est = je.Estimator(mlp_model_fn, model_dir, params={})
  est.train(lambda: batches({'x': X[:32]}, Y[:32]), max_steps=2)
  return est


def test_missing_feature_is_named(trained):
  with pytest.raises(ValueError, match="feature 'x' is missing"):
    trained.train(lambda: batches({'z': X[:32]}, Y[:32]), steps=1)


def test_wrong_feature_shape_is_named(trained):
  with pytest.raises(ValueError, match=r"feature 'x': expected shape \(batch, 8\) float32, "
                                       r"got \(batch, 5\) float32"):
    trained.train(lambda: batches({'x': X[:32, :5]}, Y[:32]), steps=1)


def test_wrong_feature_dtype_is_named(trained):
  with pytest.raises(ValueError, match="feature 'x'.*float32.*float64"):
    trained.train(lambda: batches({'x': X[:32].astype(np.float64)}, Y[:32]), steps=1)


def test_shape_change_mid_stream_is_caught_before_the_step(trained):
  good, bad = ({'x': X[:32]}, Y[:32]), ({'x': X[:32, :4]}, Y[:32])
  with pytest.raises(ValueError, match="feature 'x'"):
    trained.train(lambda: [good, good, bad], steps=5)


@pytest.mark.parametrize('method,mode', [('train', 'train'), ('evaluate', 'eval')])
def test_labels_none_in_train_and_eval(model_dir, method, mode):
  est = je.Estimator(mlp_model_fn, model_dir, params={})
  with pytest.raises(ValueError, match=f"labels are None in mode '{mode}'"):
    getattr(est, method)(lambda: batches({'x': X[:32]}))


@pytest.mark.parametrize('method', ['train', 'evaluate', 'predict'])
def test_empty_dataset(model_dir, method):
  est = je.Estimator(mlp_model_fn, model_dir, params={})
  empty = lambda: tf.data.Dataset.from_tensor_slices(({'x': X}, Y)).take(0).batch(8)
  with pytest.raises(ValueError, match='input_fn returned an empty dataset'):
    out = getattr(est, method)(empty)
    list(out) if method == 'predict' else None


def test_model_fn_returning_wrong_type(model_dir):
  est = je.Estimator(lambda features, labels, mode: {'loss': 0.0}, model_dir)
  with pytest.raises(TypeError, match='model_fn must return an EstimatorSpec, got dict'):
    est.train(lambda: batches({'x': X[:32]}, Y[:32]), steps=1)


def test_model_fn_without_features_argument():
  with pytest.raises(ValueError, match='must take an argument named "features"'):
    je.Estimator(lambda inputs, labels: None)


def test_batch_not_divisible_by_devices_names_both_numbers(model_dir):
  est = je.Estimator(mlp_model_fn, model_dir, params={})
  with pytest.raises(ValueError, match="global batch size 12 is not divisible by the 'data' "
                                       'mesh axis size 8'):
    est.train(lambda: batches({'x': X[:12]}, Y[:12]), steps=1)


def test_string_features_are_rejected_with_the_name(model_dir):
  est = je.Estimator(mlp_model_fn, model_dir, params={})
  ds = lambda: tf.data.Dataset.from_tensor_slices(({'x': X, 's': ['a'] * 64}, Y)).batch(8)
  with pytest.raises(TypeError, match="feature \\['s'\\] holds strings"):
    est.train(ds, steps=1)


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(model_dir):
  def model_fn(features, labels, mode):
    spec = mlp_model_fn(features, labels, mode, {})
    # finite for the first 5 steps, then NaN (features carry the step)
    bad = jnp.where(features['step'][0] >= 5, jnp.nan, 0.0)
    return je.EstimatorSpec(mode, loss=spec.loss + bad, optimizer=optax.adam(1e-2),
                            predictions=spec.predictions)

  data = [({'x': X[:32], 'step': np.full(32, i, np.int32)}, Y[:32]) for i in range(50)]
  config = je.RunConfig(save_checkpoints_steps=4, log_step_count_steps=10)
  est = je.Estimator(model_fn, model_dir, config)
  with pytest.raises(je.NanLossDuringTrainingError, match='at global step 5'):
    est.train(lambda: data, max_steps=40)
  assert est.latest_checkpoint().endswith('4')
  kernel = est.get_variable_value('params/Dense_0/kernel')
  assert np.all(np.isfinite(kernel))


@pytest.mark.parametrize('method', ['evaluate', 'predict'])
def test_evaluate_and_predict_check_the_trained_signature(trained, method):
  with pytest.raises(ValueError, match="feature 'x': expected shape \\(batch, 8\\)"):
    out = getattr(trained, method)(lambda: batches({'x': X[:32, :6]}, Y[:32]))
    list(out) if method == 'predict' else None
