"""Demo: a custom model_fn on scikit-learn's bundled digits, end to end, offline.

Trains an MLP (64-128-64-10, dropout, Adam) with `Estimator.train` on a
tf.data pipeline, evaluates it, predicts a few test images and prints tables.
The images are read through TensorFlow Datasets: `digits_local`
(jestimator.datasets), prepared offline in `$JESTIMATOR_DATA_DIR` or
~/.cache/jestimator/tensorflow_datasets.
"""

from __future__ import annotations

import tempfile
import time

import flax.linen as nn
import jax.numpy as jnp
import optax
import tensorflow as tf

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


def to_pixels(features, label):
  """{'image': uint8 [8, 8] in 0..16} -> {'pixels': float32 [64] in [0, 1]}, int32 label."""
  pixels = tf.reshape(tf.cast(features['image'], tf.float32), [64]) / 16.0
  return {'pixels': pixels}, None if label is None else tf.cast(label, tf.int32)


def digits_input(builder, split: str, seed: int = 0, labels: bool = True):
  """`tfds_input_fn` over a split of `digits_local`, batches of 64 ({'pixels'}, label)."""
  return je.inputs.tfds_input_fn(builder, split, batch_size=64, as_supervised=False,
                                 features_key='image', label_key='label' if labels else None,
                                 preprocess=to_pixels, shuffle_files=False,  # ordered: one file
                                 seed=seed)


def run(model_dir: str | None = None, max_steps: int = 1500, seed: int = 0,
        data_dir: str | None = None) -> dict:
  """Trains, evaluates and predicts; prints tables; returns the eval metrics.

  The train/test split is the dataset's (fixed); `seed` seeds the model and shuffling.
  """
  from jestimator import datasets  # pylint: disable=import-outside-toplevel
  builder = datasets.prepare('digits_local', data_dir)
  n_train, n_test = (builder.info.splits[s].num_examples for s in ('train', 'test'))
  model_dir = model_dir or tempfile.mkdtemp(prefix='jestimator_demo_')
  params = {'hidden_units': [128, 64], 'dropout': 0.1, 'learning_rate': 3e-3}
  config = je.RunConfig(seed=seed, log_step_count_steps=500, save_checkpoints_steps=500)
  est = je.Estimator(model_fn, model_dir=model_dir, config=config, params=params)
  print(f'jestimator demo: digits ({n_train} train / {n_test} test), MLP '
        f'64-{"-".join(map(str, params["hidden_units"]))}-10, {max_steps} steps, '
        f'mesh {dict(est.mesh.shape)}, model_dir {model_dir}')
  start = time.perf_counter()
  est.train(digits_input(builder, 'train', seed), max_steps=max_steps)
  train_s = time.perf_counter() - start
  metrics = est.evaluate(digits_input(builder, 'test'))
  print()
  print(table(f'Evaluation on {n_test} test images (trained in {train_s:.1f} s)',
               ('metric', 'value'),
               [(k, f'{v:.4f}' if k != 'global_step' else int(v)) for k, v in sorted(
                   metrics.items())]))
  shown = 10
  y_test = [int(e['label']) for e in builder.as_dataset(split=f'test[:{shown}]')]
  predictions = est.predict(digits_input(builder, f'test[:{shown}]', labels=False))
  rows = [(i, int(y_test[i]), int(p['class_ids']), f'{p["probabilities"].max():.3f}',
           'ok' if p['class_ids'] == y_test[i] else 'WRONG')
          for i, p in enumerate(predictions)]
  print()
  print(table(f'Predictions for the first {shown} test images', ('#', 'label', 'predicted',
                                                                  'probability', ''), rows))
  return metrics
