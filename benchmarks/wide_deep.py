"""Wide & deep training throughput, and where the time goes: host transforms vs device step.

Workload: a synthetic census-like table (262,144 rows): `occupation` (40
strings, vocabulary list), `city` (5,000 strings, hash bucket 1,000),
`tags` (0-4 strings per row, variable length, hash bucket 100), `age`,
`hours` (numbers). Wide part: occupation, city, occupation x bucketized(age);
deep part: embeddings of occupation (8) and city (8), indicator of tags,
age and hours; hidden [128, 64]; batch 512; FTRL + Adagrad (the defaults).

The table is a DataFrame (`tags` a column of lists) fed two ways to the same
DNNLinearCombinedClassifier, in one process, in interleaved rounds:
  per-example  from_tensor_slices -> shuffle(10000) -> batch: one tf.data
               element per example through the shuffle buffer
  pandas       pandas_input_fn(shuffle=True): a full shuffle of indices and
               one gather per batch (see inputs/numpy_io.py)
Three measurements, examples/s over the steps after a warm-up:
  host    the tf.data pipeline alone: input_fn + FeatureTransform -> numpy
  device  the compiled train step alone: the same model fed pre-transformed
          batches from memory (no string work)
  full    DNNLinearCombinedClassifier.train: both, overlapped (tf.data runs
          ahead in its own threads while the device steps)
If `full` is close to min(host, device) the device is kept fed; on a CPU-only
machine the "device" shares the host's cores, so full is nearer to
1 / (1/host + 1/device).

  python benchmarks/wide_deep.py [--steps 300] [--batch 512] [--rounds 5]

Last figures (2-core CPU, quiet, jax 0.10.2, one device; 5 rounds, medians of rounds):
  device                          407k examples/s
  per-example  host               152k   (the bound: the per-example pipeline)
               full               112k
  pandas       host               554k
               full               236k
  full, pandas / per-example      2.42x (rounds 1.79-3.90)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import jax
import numpy as np
import pandas as pd
import tensorflow as tf

import jestimator as je
import jestimator.canned as canned
import jestimator.feature_column as fc
from jestimator.canned.dnn_linear_combined import wide_and_deep
from jestimator.inputs.host_transform import apply_to_dataset

WARMUP = 30
OCCUPATIONS = [f'job{i}' for i in range(40)]


def make_table(n: int = 262144, seed: int = 0):
  """(features DataFrame, labels Series): one row per example, `tags` a list per row."""
  rng = np.random.RandomState(seed)
  occupation = rng.choice(OCCUPATIONS, n)
  city = np.char.add('city', rng.randint(0, 5000, n).astype(str))
  age = rng.randint(17, 90, n).astype(np.float32)
  hours = rng.randint(1, 80, n).astype(np.float32)
  tags = [list(rng.choice(['a', 'b', 'c', 'd', 'e'], rng.randint(0, 5))) for _ in range(n)]
  score = (np.char.str_len(occupation) % 3) + (age > 40) + (hours > 45) + rng.rand(n)
  features = pd.DataFrame({'occupation': occupation.astype(object), 'city': city.astype(object),
                           'age': age, 'hours': hours, 'tags': tags})
  return features, pd.Series((score > 2).astype(np.int32))


def columns():
  occupation = fc.categorical_column_with_vocabulary_list('occupation', OCCUPATIONS)
  city = fc.categorical_column_with_hash_bucket('city', 1000)
  age = fc.numeric_column('age', normalizer_fn=lambda x: (x - 50.0) / 20.0)
  hours = fc.numeric_column('hours', normalizer_fn=lambda x: (x - 40.0) / 20.0)
  wide = [occupation, city,
          fc.crossed_column([occupation, fc.bucketized_column(age, [25.0, 40.0, 60.0])], 500)]
  deep = [fc.embedding_column(occupation, 8), fc.embedding_column(city, 8),
          fc.indicator_column(fc.categorical_column_with_hash_bucket('tags', 100)), age, hours]
  return wide, deep


def per_example_input_fn(table, batch: int):
  """The per-example pipeline: from_tensor_slices -> shuffle(10000) -> batch."""
  features, labels = table
  features = {c: features[c].to_numpy() for c in features.columns if c != 'tags'}
  features['tags'] = tf.ragged.constant(list(table[0]['tags']))
  labels = labels.to_numpy()

  def input_fn():
    ds = tf.data.Dataset.from_tensor_slices((features, labels)).shuffle(10000, seed=0).repeat()
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  return input_fn


def by_index_input_fn(table, batch: int):
  """jestimator's own: a full per-epoch shuffle of indices, then a gather per batch."""
  return je.inputs.pandas_input_fn(*table, batch_size=batch, num_epochs=None, shuffle=True,
                                   seed=0)


LENGTHS = {'tags': 4}


def time_host(input_fn, transform, steps: int, batch: int) -> float:
  it = iter(apply_to_dataset(input_fn(), [transform], je.ModeKeys.TRAIN))
  for _ in range(WARMUP):
    next(it)
  start = time.perf_counter()
  for _ in range(steps):
    jax_ready = {k: v.numpy() for k, v in next(it)[0].items()}
  del jax_ready
  return steps * batch / (time.perf_counter() - start)


class Timer(je.hooks.Hook):
  """Wall time from the end of warm-up step WARMUP to the end of training (device synced)."""

  def after_step(self, ctx):
    if ctx.step == WARMUP:
      jax.block_until_ready(ctx.state)
      self.start = time.perf_counter()

  def end(self, ctx):
    jax.block_until_ready(ctx.state)
    self.seconds = time.perf_counter() - self.start


def timed_train(est, input_fn, steps: int, batch: int) -> float:
  timer = Timer()
  est.train(input_fn, max_steps=WARMUP + steps, hooks=[timer])
  return steps * batch / timer.seconds


def time_device(input_fn, transform, wide, deep, steps: int, batch: int, config) -> float:
  logit_fn, optimizer, _ = wide_and_deep(1, wide, 'Ftrl', 'sum', deep, 'Adagrad', [128, 64],
                                         jax.nn.relu, None, False)

  batches = list(apply_to_dataset(input_fn(), [transform], je.ModeKeys.TRAIN).take(8))
  # The step alone: the same arrays the host half makes, replayed from memory.
  batches = [({k: v.numpy() for k, v in f.items()}, l.numpy()) for f, l in batches]
  in_memory = lambda: (batches[i % len(batches)] for i in range(10 ** 9))
  # No feature columns: the pre-transformed arrays pass through FeatureTransform([]).
  est = canned.CannedEstimator(logit_fn, je.heads.BinaryClassHead(), optimizer, [],
                               model_dir=tempfile.mkdtemp(), config=config)
  return timed_train(est, in_memory, steps, batch)


def new_estimator(wide, deep, config):
  return canned.DNNLinearCombinedClassifier(
      model_dir=tempfile.mkdtemp(), linear_feature_columns=wide, dnn_feature_columns=deep,
      dnn_hidden_units=[128, 64], config=config, sparse_lengths=LENGTHS)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=300)
  parser.add_argument('--batch', type=int, default=512)
  parser.add_argument('--rounds', type=int, default=5)
  args = parser.parse_args(argv)
  logging.getLogger('jestimator').setLevel(logging.WARNING)
  table = make_table()
  inputs = {'per-example shuffle(10000)': per_example_input_fn(table, args.batch),
            'pandas_input_fn(shuffle)': by_index_input_fn(table, args.batch)}
  wide, deep = columns()
  transform = fc.FeatureTransform(wide + deep, LENGTHS)
  config = je.RunConfig(seed=0, progress_bar=False, log_step_count_steps=None,
                        save_checkpoints_steps=10 ** 9)
  host = {name: [] for name in inputs}
  full = {name: [] for name in inputs}
  device = []
  for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits both inputs alike
    for name, input_fn in inputs.items():
      host[name].append(time_host(input_fn, transform, args.steps, args.batch))
      est = new_estimator(wide, deep, config)
      full[name].append(timed_train(est, input_fn, args.steps, args.batch))
    device.append(time_device(inputs['per-example shuffle(10000)'], transform, wide, deep,
                              args.steps, args.batch, config))
  median = lambda xs: float(np.median(xs))
  print(f'wide & deep, batch {args.batch}, {args.steps} steps, {args.rounds} rounds, '
        f'mesh {dict(est.mesh.shape)}; medians, examples/s')
  print(f'  device (compiled step, batches in memory):   {median(device):10.0f}')
  for name in inputs:
    print(f'  {name}:')
    print(f'    host (tf.data + feature columns -> numpy): {median(host[name]):10.0f}')
    print(f'    full (Estimator.train, overlapped):        {median(full[name]):10.0f} '
          f'({median(full[name]) / min(median(host[name]), median(device)):.0%} '
          'of the slower half)')
  old, new = (np.array(full[name]) for name in inputs)
  print(f'  full, pandas_input_fn / per-example: median of rounds {median(new / old):.2f}x '
        f'(rounds {", ".join(f"{r:.2f}" for r in new / old)})')


if __name__ == '__main__':
  main()
