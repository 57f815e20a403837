"""Demo: a custom model_fn on scikit-learn's bundled digits, end to end, offline.

Trains an MLP (64-128-64-10, dropout, Adam) with `Estimator.train` on a
tf.data pipeline, evaluates it, predicts a few test images and prints tables.
"""

from __future__ import annotations

import tempfile
import time

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax

import jestimator as je
from jestimator.demos.table import table


def model_fn(features, labels, mode, params):
  """MLP classifier written inline with Flax layers (the tf.layers way)."""
  x = features['pixels']
  for units in params['hidden_units']:
    x = nn.relu(nn.Dense(units)(x))
    x = nn.Dropout(params['dropout'], deterministic=mode != je.ModeKeys.TRAIN)(x)
  logits = nn.Dense(10)(x)
  predictions = {'class_ids': jnp.argmax(logits, -1), 'probabilities': nn.softmax(logits)}
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions=predictions)
  loss = je.masked_mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
  metrics = {'accuracy': je.metrics.Accuracy.from_model_output(labels, predictions['class_ids'])}
  return je.EstimatorSpec(mode, predictions=predictions, loss=loss, eval_metrics=metrics,
                          optimizer=optax.adam(params['learning_rate']))


def load_digits(seed: int = 0):
  """scikit-learn's 1,797 8x8 digits, scaled to [0, 1], split 80/20."""
  from sklearn.datasets import load_digits as sk_load_digits  # the `examples` extra

  data = sk_load_digits()
  x = (data.data / 16.0).astype(np.float32)
  y = data.target.astype(np.int32)
  order = np.random.RandomState(seed).permutation(len(x))
  cut = int(0.8 * len(x))
  return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def run(model_dir: str | None = None, max_steps: int = 1500, seed: int = 0) -> dict:
  """Trains, evaluates and predicts; prints tables; returns the eval metrics."""
  (x_train, y_train), (x_test, y_test) = load_digits(seed)
  model_dir = model_dir or tempfile.mkdtemp(prefix='jestimator_demo_')
  params = {'hidden_units': [128, 64], 'dropout': 0.1, 'learning_rate': 3e-3}
  config = je.RunConfig(seed=seed, log_step_count_steps=500, save_checkpoints_steps=500)
  est = je.Estimator(model_fn, model_dir=model_dir, config=config, params=params)
  print(f'jestimator demo: digits ({len(x_train)} train / {len(x_test)} test), MLP '
        f'64-{"-".join(map(str, params["hidden_units"]))}-10, {max_steps} steps, '
        f'mesh {dict(est.mesh.shape)}, model_dir {model_dir}')
  start = time.perf_counter()
  est.train(je.inputs.numpy_input_fn({'pixels': x_train}, y_train, batch_size=64,
                                     num_epochs=None, shuffle=True), max_steps=max_steps)
  train_s = time.perf_counter() - start
  metrics = est.evaluate(je.inputs.numpy_input_fn({'pixels': x_test}, y_test, batch_size=64,
                                                  shuffle=False))
  print()
  print(table(f'Evaluation on {len(x_test)} test images (trained in {train_s:.1f} s)',
               ('metric', 'value'),
               [(k, f'{v:.4f}' if k != 'global_step' else int(v)) for k, v in sorted(
                   metrics.items())]))
  shown = 10
  predictions = est.predict(je.inputs.numpy_input_fn({'pixels': x_test[:shown]}, batch_size=16,
                                                     shuffle=False))
  rows = [(i, int(y_test[i]), int(p['class_ids']), f'{p["probabilities"].max():.3f}',
           'ok' if p['class_ids'] == y_test[i] else 'WRONG')
          for i, p in enumerate(predictions)]
  print()
  print(table(f'Predictions for the first {shown} test images', ('#', 'label', 'predicted',
                                                                  'probability', ''), rows))
  return metrics
