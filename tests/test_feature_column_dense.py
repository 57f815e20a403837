"""Device half against the real tf.feature_column (TF 2.15): DenseFeatures and LinearModel.

tests/fixtures/feature_columns/dense_outputs.json: numeric, bucketized,
indicator, embedding (each combiner, weighted, max_norm) and shared-embedding
outputs of `tf.keras.layers.DenseFeatures`, the canned `LinearModel` with
fixed weights, and `make_parse_example_spec`. Host half, then Flax module;
outputs float32-close.
"""

import jax
import numpy as np
import pytest
import tensorflow as tf

import jestimator.feature_column as fc
from feature_column_specs import Builder, cases, features, load

RTOL, ATOL = 1e-6, 1e-6
DENSE = cases('dense_outputs.json')
SHARED = cases('dense_outputs.json', 'shared_embeddings')
LINEAR = cases('dense_outputs.json', 'linear_model')


def host_half(columns, feature_specs):
  out = fc.transform_features(features(feature_specs), columns)
  return {k: np.asarray(v) for k, v in out.items()}


def run_dense_features(columns, feature_specs):
  feats = host_half(columns, feature_specs)
  layer = fc.DenseFeatures(columns)
  variables = layer.init(jax.random.PRNGKey(0), feats)
  return np.asarray(jax.jit(layer.apply)(variables, feats)), variables


@pytest.mark.parametrize('name', sorted(DENSE))
def test_dense_features_equal_tf(name, tmp_path):
  case = DENSE[name]
  columns = [Builder(tmp_path)(s) for s in case['columns']]
  assert [c.name for c in columns] == case['column_names_as_given']
  out, _ = run_dense_features(columns, case['features'])
  np.testing.assert_allclose(out, np.asarray(case['output'], np.float32), rtol=RTOL, atol=ATOL)
  assert fc.layout(columns) == [(p['column_name'], p['offset'], p['width'])
                                for p in case['layout']]


@pytest.mark.parametrize('name', sorted(SHARED))
def test_shared_embeddings_share_one_table_and_equal_tf(name, tmp_path):
  case = SHARED[name]
  columns = Builder(tmp_path)(case['column'])
  assert [c.name for c in columns] == case['column_names']
  out, variables = run_dense_features(columns, case['features'])
  np.testing.assert_allclose(out, np.asarray(case['output'], np.float32), rtol=RTOL, atol=ATOL)
  tf_table = case['variables'][0].split('/')[-1].split(':')[0]
  assert list(variables['params']) == [tf_table]
  for column in columns:
    alone, _ = run_dense_features([column], case['features'])
    np.testing.assert_allclose(alone, case['per_column_output'][column.name], rtol=RTOL,
                               atol=ATOL)


@pytest.mark.parametrize('name', sorted(LINEAR))
def test_linear_model_equals_tf(name, tmp_path):
  case = LINEAR[name]
  columns = [Builder(tmp_path)(s) for s in case['columns']]
  feats = host_half(columns, case['features'])
  model = fc.LinearModel(columns, units=case['units'], sparse_combiner=case['sparse_combiner'])
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), feats)['params']
  params = {('bias_weights' if k == 'bias' else k): np.asarray(w['value'], np.float32)
            for k, w in case['weights'].items()}
  assert {k: v.shape for k, v in shapes.items()} == {k: v.shape for k, v in params.items()}
  out = jax.jit(model.apply)({'params': params}, feats)
  np.testing.assert_allclose(out, np.asarray(case['output'], np.float32), rtol=RTOL, atol=ATOL)


def test_linear_model_starts_at_zero(tmp_path):
  case = LINEAR['linear_model_units3_sum']
  columns = [Builder(tmp_path)(s) for s in case['columns']]
  feats = host_half(columns, case['features'])
  model = fc.LinearModel(columns, units=3)
  variables = model.init(jax.random.PRNGKey(0), feats)
  assert all(not np.any(v) for v in jax.tree.leaves(variables))


def test_make_parse_example_spec_equals_tf(tmp_path):
  case = load('dense_outputs.json')['parse_example_spec']
  spec = fc.make_parse_example_spec([Builder(tmp_path)(s) for s in case['columns']])
  assert sorted(spec) == sorted(case['spec'])
  for key, want in case['spec'].items():
    got = spec[key]
    assert type(got).__name__ == want['kind'], key
    assert got.dtype == tf.as_dtype(want['dtype']), key
    if want['kind'] == 'FixedLenFeature':
      assert list(got.shape) == want['shape'], key
      default = None if got.default_value is None else np.asarray(got.default_value).tolist()
      assert default == want['default_value'], key
