"""Small model_fns and data shared by the tests."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax

import jestimator as je


def make_data(n=512, d=8, seed=0):
  rng = np.random.RandomState(seed)
  x = rng.randn(n, d).astype(np.float32)
  w = rng.randn(d, 3).astype(np.float32)
  y = np.argmax(x @ w, axis=1).astype(np.int32)
  return x, y


def mlp_model_fn(features, labels, mode, params):
  """A 2-layer MLP classifier with dropout and batch norm, Adam."""
  train = mode == je.ModeKeys.TRAIN
  h = nn.relu(nn.Dense(params.get('hidden', 16))(features['x']))
  h = nn.Dropout(params.get('dropout', 0.0), deterministic=not train)(h)
  if params.get('batch_norm'):
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
  logits = nn.Dense(3)(h)
  class_ids = jnp.argmax(logits, -1)
  predictions = {'class_ids': class_ids, 'logits': logits}
  if 'id' in features:
    predictions['id'] = features['id']
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions=predictions)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  metrics = {'accuracy': je.metrics.Accuracy.from_model_output(labels, class_ids)}
  return je.EstimatorSpec(mode, loss=loss, predictions=predictions, eval_metrics=metrics,
                          optimizer=optax.adam(params.get('learning_rate', 1e-2)))


def params_of(estimator):
  return {n: estimator.get_variable_value(n) for n in estimator.get_variable_names()}
