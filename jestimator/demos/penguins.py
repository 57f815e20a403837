"""Demo: a wide & deep classifier on the Palmer penguins table (string columns), offline.

Species from island, sex and four measurements, with numeric (z-scored),
bucketized, vocabulary, crossed (hashed) and embedding columns; the table
ships inside the `palmerpenguins` package. Trains `DNNLinearCombinedClassifier`,
evaluates, and prints predictions with class names.
"""

from __future__ import annotations

import csv
import importlib.resources
import io
import tempfile
import time

import numpy as np
import tensorflow as tf

import jestimator as je
from jestimator import canned
from jestimator import feature_column as fc
from jestimator.demos.table import table

NUMERIC = ['bill_length_mm', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g']
SPECIES = ['Adelie', 'Chinstrap', 'Gentoo']


def load_penguins(seed: int = 0):
  """(train, test) as ({column: [n, 1] array}, species [n, 1]); rows with an NA dropped."""
  raw = importlib.resources.files('palmerpenguins').joinpath('data/penguins.csv').read_text()
  rows = [r for r in csv.DictReader(io.StringIO(raw))
          if all(r[c] != 'NA' for c in ['species', 'island', 'sex'] + NUMERIC)]
  order = np.random.RandomState(seed).permutation(len(rows))
  cut = int(0.8 * len(rows))

  def part(index):
    features = {c: np.array([[float(rows[i][c])] for i in index], np.float32) for c in NUMERIC}
    features.update({c: np.array([[rows[i][c]] for i in index], object)
                     for c in ('island', 'sex')})
    return features, np.array([[rows[i]['species']] for i in index], object)

  return part(sorted(order[:cut])), part(sorted(order[cut:]))


def columns(train_features):
  """(wide, deep) feature columns; numeric ones z-scored with the training statistics."""
  numeric = [fc.numeric_column(c, normalizer_fn=lambda x, m=float(train_features[c].mean()),
                               s=float(train_features[c].std()): (x - m) / s) for c in NUMERIC]
  island = fc.categorical_column_with_vocabulary_list('island', ['Biscoe', 'Dream', 'Torgersen'])
  sex = fc.categorical_column_with_vocabulary_list('sex', ['female', 'male'])
  flipper = fc.bucketized_column(fc.numeric_column('flipper_length_mm'), [190.0, 200.0, 210.0])
  wide = [island, sex, flipper, fc.crossed_column([island, sex], hash_bucket_size=16)]
  deep = numeric + [fc.embedding_column(island, dimension=2), fc.indicator_column(sex)]
  return wide, deep


def run(model_dir: str | None = None, max_steps: int = 600, seed: int = 0) -> dict:
  """Trains, evaluates and predicts; prints tables; returns the eval metrics."""
  train, test = load_penguins(seed)
  wide, deep = columns(train[0])
  model_dir = model_dir or tempfile.mkdtemp(prefix='jestimator_demo_')
  est = canned.DNNLinearCombinedClassifier(
      model_dir=model_dir, linear_feature_columns=wide, dnn_feature_columns=deep,
      dnn_hidden_units=[16, 16], dnn_optimizer='Adam', n_classes=3, label_vocabulary=SPECIES,
      config=je.RunConfig(seed=seed, log_step_count_steps=200, save_checkpoints_steps=200))
  print(f'jestimator demo: wide & deep on Palmer penguins ({len(train[1])} train / '
        f'{len(test[1])} test), {max_steps} steps, mesh {dict(est.mesh.shape)}, '
        f'model_dir {model_dir}')
  start = time.perf_counter()
  est.train(lambda: tf.data.Dataset.from_tensor_slices(train).shuffle(
      len(train[1]), seed=seed).repeat().batch(32), max_steps=max_steps)
  seconds = time.perf_counter() - start
  metrics = est.evaluate(lambda: tf.data.Dataset.from_tensor_slices(test).batch(32))
  print()
  print(table(f'Evaluation on {len(test[1])} test penguins (trained in {seconds:.1f} s)',
              ('metric', 'value'), [(k, f'{v:.4f}' if k != 'global_step' else int(v))
                                    for k, v in sorted(metrics.items())]))
  shown = {k: v[::8][:9] for k, v in test[0].items()}
  labels = test[1][::8][:9, 0]
  rows = [(p_island, p_sex, f'{bill:.1f}', label, p['classes'][0].decode(),
           f'{p["probabilities"].max():.3f}', 'ok' if p['classes'][0].decode() == label else
           'WRONG')
          for p_island, p_sex, bill, label, p in zip(
              shown['island'][:, 0], shown['sex'][:, 0], shown['bill_length_mm'][:, 0], labels,
              est.predict(lambda: tf.data.Dataset.from_tensor_slices(shown).batch(16)))]
  print()
  print(table('Predictions (every 8th test penguin)',
              ('island', 'sex', 'bill mm', 'species', 'predicted', 'probability', ''), rows))
  return metrics
