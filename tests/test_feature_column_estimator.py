"""Feature columns inside an Estimator: host half in tf.data, device half in the model_fn.

Strings, a variable-length (ragged) input, a cross and a numeric column go
through `FeatureTransform` in the input pipeline and `DenseFeatures` /
`LinearModel` in a model_fn: training, evaluation, prediction, resume (the
tf.data iterator with lookup tables in its map function is checkpointed),
one device vs eight, and Python-iterable input_fns (the eager numpy path).
"""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je
import jestimator.feature_column as fc
from conftest import one_device_mesh

COLOR = fc.categorical_column_with_vocabulary_list('color', ['red', 'green', 'blue'],
                                                   num_oov_buckets=1)
TAGS = fc.categorical_column_with_hash_bucket('tags', 7)
DEEP = [fc.embedding_column(COLOR, 3), fc.indicator_column(TAGS),
        fc.numeric_column('x', normalizer_fn=lambda x: x / 2.0)]
WIDE = [fc.crossed_column([COLOR, 'shape'], 11), fc.bucketized_column(fc.numeric_column('x'),
                                                                     [0.0, 1.0])]
LENGTHS = {'tags': 3}


def data(n=64, seed=0):
  rng = np.random.RandomState(seed)
  colors = rng.choice(['red', 'green', 'blue', 'pink', ''], n)
  shapes = rng.choice(['o', 'x'], n)
  x = rng.randn(n, 1).astype(np.float32)
  tags = [list(rng.choice(['a', 'b', 'c', 'd'], rng.randint(0, 4))) for _ in range(n)]
  y = ((colors == 'red') | (x[:, 0] > 0.5)).astype(np.int32)
  feats = {'color': colors.reshape(-1, 1).astype(object), 'shape': shapes.astype(object),
           'x': x, 'tags': tags}
  return feats, y


def input_fn(feats, y, batch=16, repeat=True):
  def fn():
    f = dict(feats, tags=tf.ragged.constant(feats['tags'], dtype=tf.string))
    ds = tf.data.Dataset.from_tensor_slices((f, y))
    return (ds.repeat() if repeat else ds).batch(batch)
  return fn


def model_fn(features, labels, mode):
  deep = nn.Dense(3)(nn.relu(nn.Dense(8)(fc.DenseFeatures(DEEP)(features))))
  logits = deep + fc.LinearModel(WIDE, units=3, name='linear')(features)
  head = je.heads.MultiClassHead(3)
  return head.create_estimator_spec(features, mode, logits, labels, optimizer=optax.adam(0.05))


def estimator(model_dir, mesh='one'):
  mesh = one_device_mesh() if mesh == 'one' else mesh
  config = je.RunConfig(seed=0, mesh=mesh, progress_bar=False, log_step_count_steps=None)
  return je.Estimator(model_fn, model_dir=model_dir, config=config,
                      input_transforms=[fc.FeatureTransform(DEEP + WIDE, LENGTHS)])


def params_of(est):
  return {n: est.get_variable_value(n) for n in est.get_variable_names() if n.startswith('params')}


def test_train_evaluate_predict(model_dir):
  feats, y = data()
  est = estimator(model_dir)
  est.train(input_fn(feats, y), steps=30)
  after = est.evaluate(input_fn(feats, y, repeat=False))
  assert after['accuracy'] > 0.8
  names = est.get_variable_names()
  assert 'params/DenseFeatures_0/color_embedding/embedding_weights' in names
  assert est.get_variable_value('params/linear/color_X_shape').shape == (11, 3)
  predictions = list(est.predict(input_fn(feats, None, repeat=False)))
  assert len(predictions) == len(y) and predictions[0]['logits'].shape == (3,)


def test_resume_equals_uninterrupted(tmp_path):
  feats, y = data()
  a = estimator(str(tmp_path / 'a'))
  a.train(input_fn(feats, y), steps=6)
  b = estimator(str(tmp_path / 'b'))
  b.train(input_fn(feats, y), steps=3)
  b = estimator(str(tmp_path / 'b'))
  b.train(input_fn(feats, y), steps=3)
  jax.tree.map(np.testing.assert_array_equal, params_of(a), params_of(b))


def test_one_device_equals_eight(tmp_path):
  feats, y = data()
  one = estimator(str(tmp_path / 'one'))
  eight = estimator(str(tmp_path / 'eight'), mesh=None)
  assert eight.mesh.shape['data'] == 8
  for est in (one, eight):
    est.train(input_fn(feats, y), steps=5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               params_of(one), params_of(eight))


def test_python_iterable_input_runs_the_host_half_eagerly(model_dir):
  feats, y = data(16)
  tags = np.array([t + [''] * (3 - len(t)) for t in feats['tags']], object)  # '' is missing

  def batches():
    return [(dict(feats, tags=tags), y)] * 3

  est = estimator(model_dir)
  est.train(batches, steps=3)
  assert est.evaluate(batches, steps=1)['global_step'] == 3


@pytest.mark.parametrize('columns', [[fc.numeric_column('x')], []])
def test_raw_numeric_features_pass_through_and_strings_stop(columns):
  out = fc.transform_features({'x': np.ones((2, 1), np.float32), 's': np.array([['a'], ['b']],
                                                                               object)}, columns)
  assert 's' not in out and isinstance(out['x'], np.ndarray)
  assert ('x/value' in out) == bool(columns)
