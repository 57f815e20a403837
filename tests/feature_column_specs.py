"""Rebuilds the feature-column fixtures' declarative specs with jestimator.

tools/fixtures/README_feature_columns.md documents the format: a column is
`{"fn": <tf.feature_column function>, ...kwargs}`, a feature is dense values
or a sparse `indices/values/dense_shape` triple. The same specs built the tf
columns that produced the fixtures, so the two sides see identical inputs.
"""

import functools
import json
import pathlib

import jax
import numpy as np
import tensorflow as tf

import jestimator.feature_column as fc

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'feature_columns'

NORMALIZERS = {
    'x*2-1': lambda x: x * 2 - 1,
    '(x-3)/2': lambda x: (x - 3.0) / 2.0,
}


@functools.cache
def load(name: str) -> dict:
  return json.loads((FIXTURES / name).read_text())


def cases(name: str, key: str = 'cases') -> dict:
  return {c['name']: c for c in load(name)[key]}


def constant_initializer(table):
  value = np.asarray(table, np.float32)

  def init(key, shape, dtype=np.float32):
    del key
    assert tuple(shape) == value.shape, (shape, value.shape)
    return jax.numpy.asarray(value, dtype)

  return init


class Builder:
  """Spec -> jestimator column (vocabulary files are written under `tmp_dir`)."""

  def __init__(self, tmp_dir: pathlib.Path):
    self.tmp_dir = tmp_dir
    self.files = 0

  @staticmethod
  def initializer(spec):
    """The fixture's table, or the default (tf's is seeded by TF's RNG: not reproducible)."""
    return constant_initializer(spec['initializer_table']) if 'initializer_table' in spec else None

  def __call__(self, spec):
    if isinstance(spec, str):
      return spec
    fn, s = spec['fn'], spec
    if fn == 'numeric_column':
      normalizer = None
      if s.get('normalizer') == '(x - mean) / std':
        normalizer = lambda x, m=s['mean'], d=s['std']: (x - m) / d
      elif s.get('normalizer'):
        normalizer = NORMALIZERS[s['normalizer']]
      return fc.numeric_column(s['key'], shape=tuple(s.get('shape', [1])),
                               default_value=s.get('default_value'),
                               dtype=s.get('dtype', 'float32'), normalizer_fn=normalizer)
    if fn == 'bucketized_column':
      return fc.bucketized_column(self(s['source_column']), s['boundaries'])
    if fn == 'categorical_column_with_identity':
      return fc.categorical_column_with_identity(s['key'], s['num_buckets'],
                                                 default_value=s.get('default_value'))
    if fn == 'categorical_column_with_vocabulary_list':
      return fc.categorical_column_with_vocabulary_list(
          s['key'], s['vocabulary_list'], dtype=s.get('dtype'),
          default_value=s.get('default_value', -1), num_oov_buckets=s.get('num_oov_buckets', 0))
    if fn == 'categorical_column_with_vocabulary_file':
      self.files += 1
      path = self.tmp_dir / f'vocab_{self.files}.txt'
      path.write_text(s['vocabulary_file_contents'], encoding='utf-8')
      return fc.categorical_column_with_vocabulary_file(
          s['key'], str(path), vocabulary_size=s.get('vocabulary_size'),
          dtype=s.get('dtype', 'string'), default_value=s.get('default_value'),
          num_oov_buckets=s.get('num_oov_buckets', 0))
    if fn == 'categorical_column_with_hash_bucket':
      return fc.categorical_column_with_hash_bucket(s['key'], s['hash_bucket_size'],
                                                    dtype=s.get('dtype', 'string'))
    if fn == 'crossed_column':
      return fc.crossed_column([self(k) for k in s['keys']], s['hash_bucket_size'],
                               hash_key=s.get('hash_key'))
    if fn == 'weighted_categorical_column':
      return fc.weighted_categorical_column(self(s['categorical_column']),
                                            s['weight_feature_key'],
                                            dtype=s.get('dtype', 'float32'))
    if fn == 'indicator_column':
      return fc.indicator_column(self(s['categorical_column']))
    if fn == 'embedding_column':
      return fc.embedding_column(self(s['categorical_column']), s['dimension'],
                                 combiner=s.get('combiner', 'mean'),
                                 initializer=self.initializer(s),
                                 max_norm=s.get('max_norm'))
    if fn == 'shared_embeddings':
      return fc.shared_embeddings([self(c) for c in s['categorical_columns']], s['dimension'],
                                  combiner=s.get('combiner', 'mean'),
                                  initializer=self.initializer(s))
    raise ValueError(fn)


def to_tf(spec: dict):
  dtype = tf.as_dtype(spec['dtype'])
  if spec['kind'] == 'dense':
    return tf.constant(spec['values'], dtype=dtype)
  return tf.SparseTensor(
      indices=tf.constant(spec['indices'], tf.int64, shape=[len(spec['indices']), 2]),
      values=tf.constant(spec['values'], dtype, shape=[len(spec['values'])]),
      dense_shape=tf.constant(spec['dense_shape'], tf.int64))


def features(specs: dict) -> dict:
  return {k: to_tf(v) for k, v in specs.items()}


def dense_from_sparse(st: dict, width: int, default) -> np.ndarray:
  """A fixture SparseTensor laid out as jestimator's `[batch, width]` slots."""
  batch, n = st['dense_shape']
  assert n <= width, (n, width)
  out = np.full((batch, width), default, np.asarray(st['values'] or [default]).dtype)
  for (row, position), value in zip(st['indices'], st['values']):
    out[row, position] = value
  return out


def penguins(reference: dict) -> dict:
  """The canned reference's palmerpenguins split: {'train'|'test': (features, labels)}.

  Rows with a missing value dropped, CSV order, `RandomState(0)` permutation,
  80/20 (the fixture stores the test row numbers); features are `[n, 1]`
  float32 measurements and object (string) island/sex, labels `[n, 1]` names.
  """
  import csv
  import importlib.resources
  import io

  data = reference['data']
  raw = importlib.resources.files('palmerpenguins').joinpath('data/penguins.csv').read_text()
  needed = [data['label']] + data['categorical_features'] + data['numeric_features']
  rows = [r for r in csv.DictReader(io.StringIO(raw)) if all(r[c] != 'NA' for c in needed)]
  assert len(rows) == data['rows_after_dropping_missing']
  perm = np.random.RandomState(0).permutation(len(rows))
  cut = int(0.8 * len(rows))
  splits = {'train': sorted(perm[:cut].tolist()), 'test': sorted(perm[cut:].tolist())}
  assert splits['test'] == data['test_indices']
  out = {}
  for name, index in splits.items():
    feats = {c: np.array([[float(rows[i][c])] for i in index], np.float32)
             for c in data['numeric_features']}
    feats.update({c: np.array([[rows[i][c]] for i in index], object)
                  for c in data['categorical_features']})
    out[name] = feats, np.array([[rows[i][data['label']]] for i in index], object)
  return out
