"""Demo: a wide & deep classifier on the Palmer penguins table (string columns), offline.

Species from island, sex and four measurements, with numeric (z-scored),
bucketized, vocabulary, crossed (hashed) and embedding columns; the table
ships inside the `palmerpenguins` package. Trains `DNNLinearCombinedClassifier`,
evaluates, and prints predictions with class names. The table is read through
TensorFlow Datasets: `penguins_local` (jestimator.datasets), prepared offline in
`$JESTIMATOR_DATA_DIR` or ~/.cache/jestimator/tensorflow_datasets.
"""

from __future__ import annotations

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


def penguins_builder(data_dir: str | None = None):
  """The `penguins_local` TFDS builder, prepared (offline) if it was not yet."""
  from jestimator import datasets  # pylint: disable=import-outside-toplevel
  return datasets.prepare('penguins_local', data_dir)


def load_penguins(seed: int = 0, data_dir: str | None = None):
  """(train, test) of `penguins_local`, each as ({column: [n, 1]}, species [n, 1]) numpy
  arrays of str / float32. The split is the dataset's (the former seed-0 split)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if seed != 0:
    raise ValueError(f'load_penguins: the split is fixed by the penguins_local dataset '
                     f'(seed 0); got seed={seed}.')
  builder = penguins_builder(data_dir)

  def part(split):
    table = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    text = lambda c: np.array([[v.decode()] for v in table[c]], object)
    features = {c: table[c].astype(np.float32)[:, None] for c in NUMERIC}
    features.update({c: text(c) for c in ('island', 'sex')})
    return features, text('species')

  return part('train'), part('test')


def tfds_input(builder, split: str, seed: int):
  """`tfds_input_fn` over a split: features as in `load_penguins`, labels the species."""
  def to_columns(features, species):
    return {c: v[None] for c, v in features.items()}, species[None]
  return je.inputs.tfds_input_fn(builder, split, batch_size=32, as_supervised=False,
                                 features_key=NUMERIC + ['island', 'sex'], label_key='species',
                                 preprocess=to_columns, shuffle_files=False,  # ordered: one file
                                 seed=seed)


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


def run(model_dir: str | None = None, max_steps: int = 600, seed: int = 0,
        data_dir: str | None = None) -> dict:
  """Trains, evaluates and predicts; prints tables; returns the eval metrics.

  The train/test split is the dataset's (fixed); `seed` seeds the model and shuffling.
  """
  builder = penguins_builder(data_dir)
  train, test = load_penguins(data_dir=data_dir)
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
  est.train(tfds_input(builder, 'train', seed), max_steps=max_steps)
  seconds = time.perf_counter() - start
  metrics = est.evaluate(tfds_input(builder, 'test', seed))
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
