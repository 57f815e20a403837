"""Categorical columns' host half against the real tf.feature_column (TF 2.15) ids.

Every case of tests/fixtures/feature_columns/categorical_ids.json: identity,
vocabulary list/file, hash bucket, bucketized, crossed and weighted columns on
dense and sparse, string and int inputs, with OOV and missing values. The host
half writes tf's SparseTensor ids into padded `[batch, L]` slots at their
positions; equality is exact.
"""

import numpy as np
import pytest

import jestimator.feature_column as fc
from feature_column_specs import Builder, cases, dense_from_sparse, features, load

CASES = cases('categorical_ids.json')


@pytest.mark.parametrize('name', sorted(CASES))
def test_ids_equal_tf(name, tmp_path):
  case = CASES[name]
  column = Builder(tmp_path)(case['column'])
  assert column.name == case['column_name']
  assert column.num_buckets == case['num_buckets']
  out = fc.transform_features(features(case['features']), [column])
  ids = out[fc.ids_key(column.name)].numpy()
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, dense_from_sparse(case['ids'], ids.shape[1], -1))
  if case['weights'] is None:
    assert fc.weights_key(column.name) not in out
  else:
    weights = out[fc.weights_key(column.name)].numpy()
    assert weights.shape == ids.shape
    np.testing.assert_array_equal(
        weights, dense_from_sparse(case['weights'], ids.shape[1], 0.0).astype(np.float32))


def test_fingerprints_give_tf_hash_buckets():
  words = load('categorical_ids.json')['fingerprint64']
  column = fc.categorical_column_with_hash_bucket('s', 1000003)
  out = fc.transform_features({'s': np.array([[w['value']] for w in words], object)}, [column])
  expected = [[w['to_hash_bucket_fast']['1000003']] if w['value'] else [-1] for w in words]
  np.testing.assert_array_equal(out['s/ids'], expected)
