"""SparseTensor inputs on the host: a MultiLabelHead's sparse labels, repeated sparse indices.

tf.estimator's MultiLabelHead took `tf.SparseTensor` labels (what
`tf.io.parse_example` gives for a `VarLenFeature`) of class ids, or of names
with a label_vocabulary, and made them multi-hot with `tf.sparse.to_indicator`;
here `heads.host_transforms(head)` does the same in tf.data, so the model sees
the multi-hot labels the dense form gives. A SparseTensor feature that repeats
an index gives each of its values an id of its own, as tf's embedding lookup
reads it (tf's indicator column fails in SparseToDense there; we count).
"""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je
import jestimator.feature_column as fc
import jestimator.heads as heads
from jestimator.heads.sparse_labels import MultiHotLabels

VOCAB = ['zebra', 'ant', 'moose']
X = np.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [-2.0, 0.7, 0.1],
              [0.0, 1.0, 1.0], [-0.4, -0.6, 0.9], [2.2, 1.1, -1.7]], np.float32)
X = np.concatenate([X, -X[::-1]])  # 12 examples: batches of 8 and 4 (padded to 8)
LABEL_IDS = [[0, 2], [1], [2, 2], [], [0, 1, 2], [1, 0]] * 2  # a repeat, an empty list
MULTI_HOT = np.array([[1, 0, 1], [0, 1, 0], [0, 0, 1], [0, 0, 0], [1, 1, 1], [1, 1, 0]] * 2,
                     np.int32)


def _examples(label_feature):
  return [tf.train.Example(features=tf.train.Features(feature={
      'x': tf.train.Feature(float_list=tf.train.FloatList(value=x)),
      'labels': label_feature(ids)})).SerializeToString() for x, ids in zip(X, LABEL_IDS)]


def _int_labels(ids):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=ids))


def _string_labels(ids):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[VOCAB[i].encode() for i in ids]))


def parsed_input(label_feature, label_dtype, batch=8):
  """input_fn: serialized Examples -> parse_example; labels a SparseTensor [batch, k]."""
  spec = {'x': tf.io.FixedLenFeature([3], tf.float32),
          'labels': tf.io.VarLenFeature(label_dtype)}

  def parse(serialized):
    parsed = tf.io.parse_example(serialized, spec)
    return {'x': parsed['x']}, parsed['labels']

  examples = _examples(label_feature)
  return lambda: tf.data.Dataset.from_tensor_slices(examples).batch(batch).map(parse)


def dense_input(labels, batch=8):
  return lambda: tf.data.Dataset.from_tensor_slices(({'x': X}, labels)).batch(batch)


def multi_label_estimator(head, model_dir):
  def model_fn(features, labels, mode):
    logits = nn.Dense(3)(features['x'])
    return head.create_estimator_spec(features, mode, logits, labels, optax.sgd(0.1))

  return je.Estimator(model_fn, model_dir, je.RunConfig(seed=3, progress_bar=False),
                      input_transforms=heads.host_transforms(head))


def test_parse_example_gives_a_sparse_label():
  _, labels = next(iter(parsed_input(_int_labels, tf.int64)()))
  assert isinstance(labels, tf.SparseTensor)


def test_sparse_ids_become_multi_hot_on_the_host():
  head = heads.MultiLabelHead(3)
  (transform,) = heads.host_transforms(head)
  assert isinstance(transform, MultiHotLabels)
  _, labels = next(iter(parsed_input(_int_labels, tf.int64, batch=12)()))
  _, hot = transform.transform({}, labels, je.ModeKeys.TRAIN)
  assert hot.dtype == tf.int32
  np.testing.assert_array_equal(hot.numpy(), MULTI_HOT)


def test_sparse_ids_with_a_repeated_index_count_once_per_class():
  head = heads.MultiLabelHead(3)
  (transform,) = heads.host_transforms(head)
  labels = tf.SparseTensor([[0, 0], [0, 0], [1, 1], [1, 0]], tf.constant([2, 0, 1, 1]), [2, 2])
  _, hot = transform.transform({}, labels, je.ModeKeys.TRAIN)
  np.testing.assert_array_equal(hot.numpy(), [[1, 0, 1], [0, 1, 0]])


@pytest.mark.parametrize('label_feature,dtype,vocabulary', [
    (_int_labels, tf.int64, None), (_string_labels, tf.string, VOCAB)])
def test_evaluate_with_sparse_labels_equals_dense_multi_hot(model_dir, label_feature, dtype,
                                                            vocabulary):
  head = heads.MultiLabelHead(3, thresholds=[0.3, 0.5], label_vocabulary=vocabulary,
                              classes_for_class_based_metrics=[1, 2])
  est = multi_label_estimator(head, model_dir)
  est.train(parsed_input(label_feature, dtype), max_steps=2)  # the train path takes them too
  sparse = est.evaluate(parsed_input(label_feature, dtype))  # 8 + 4 (padded) examples
  dense = est.evaluate(dense_input(MULTI_HOT))
  assert sorted(sparse) == sorted(dense) and len(sparse) > 10
  for key in dense:
    np.testing.assert_allclose(sparse[key], dense[key], rtol=1e-6, err_msg=key)
  # and the numbers themselves: per-example mean over classes of sigmoid cross entropy
  logits = np.stack([p['logits'] for p in est.predict(dense_input(MULTI_HOT))])
  p = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expected = -np.mean(MULTI_HOT * np.log(p) + (1 - MULTI_HOT) * np.log(1 - p))
  np.testing.assert_allclose(sparse['average_loss'], expected, rtol=1e-5)
  accuracy = np.mean((p > 0.5) == MULTI_HOT)
  np.testing.assert_allclose(sparse['accuracy/positive_threshold_0.5'], accuracy, rtol=1e-6)


def test_string_labels_dense_padded_and_sparse_agree():
  head = heads.MultiLabelHead(3, label_vocabulary=VOCAB)
  (lookup,) = heads.host_transforms(head)
  sparse = tf.ragged.constant([['moose', 'zebra'], ['ant'], []]).to_sparse()
  dense = tf.constant([['moose', 'zebra'], ['ant', ''], ['', '']])
  _, from_sparse = lookup.transform({}, sparse, je.ModeKeys.EVAL)
  _, from_dense = lookup.transform({}, dense, je.ModeKeys.EVAL)
  np.testing.assert_array_equal(from_sparse.numpy(), [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
  np.testing.assert_array_equal(from_sparse.numpy(), from_dense.numpy())


def test_multi_head_converts_its_multi_label_heads_labels_by_name():
  head = heads.MultiHead([heads.MultiLabelHead(3, name='tags'), heads.RegressionHead(name='r')])
  (transform,) = heads.host_transforms(head)
  labels = {'tags': tf.SparseTensor([[0, 0], [1, 0], [1, 1]], tf.constant([1, 0, 2], tf.int64),
                                    [2, 2]),
            'r': tf.constant([[0.5], [1.5]])}
  _, out = transform.transform({}, labels, je.ModeKeys.TRAIN)
  np.testing.assert_array_equal(out['tags'].numpy(), [[0, 1, 0], [1, 0, 1]])
  assert out['r'] is labels['r']


def test_out_of_range_sparse_id_is_named():
  (transform,) = heads.host_transforms(heads.MultiLabelHead(3, name='tags'))
  labels = tf.SparseTensor([[0, 0], [1, 0]], tf.constant([1, 3], tf.int64), [2, 1])
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"MultiLabelHead 'tags'.*\[0, 3\)"
                     r"[\s\S]*3"):
    transform.transform({}, labels, je.ModeKeys.TRAIN)


def test_unknown_sparse_string_label_is_named(model_dir):
  head = heads.MultiLabelHead(3, label_vocabulary=VOCAB)
  est = multi_label_estimator(head, model_dir)
  labels = tf.ragged.constant([['ant'], ['lion', 'moose']]).to_sparse()
  labels = tf.sparse.concat(0, [labels] * 4)  # 8 examples
  bad = lambda: tf.data.Dataset.from_tensors(({'x': X[:8]}, labels))
  with pytest.raises(ValueError, match='label not in label_vocabulary.*lion'):
    est.evaluate(bad)


def test_sparse_string_labels_need_a_vocabulary():
  (transform,) = heads.host_transforms(heads.MultiLabelHead(3))
  with pytest.raises(ValueError, match='no label_vocabulary'):
    transform.transform({}, tf.ragged.constant([['a']]).to_sparse(), je.ModeKeys.TRAIN)


def test_float_sparse_labels_are_rejected():
  (transform,) = heads.host_transforms(heads.MultiLabelHead(3))
  labels = tf.SparseTensor([[0, 0]], tf.constant([1.0]), [1, 1])
  with pytest.raises(ValueError, match='integer class ids.*float32'):
    transform.transform({}, labels, je.ModeKeys.TRAIN)


# Repeated indices in a sparse feature: row 0 repeats [0, 0], row 2 is out of order.
REPEATED = dict(indices=[[0, 0], [0, 0], [0, 1], [1, 0], [2, 2], [2, 0]],
                values=[1, 1, 3, 0, 2, 3], dense_shape=[3, 3])


def repeated_ids():
  return tf.SparseTensor(REPEATED['indices'], tf.constant(REPEATED['values'], tf.int64),
                         REPEATED['dense_shape'])


def test_repeated_index_gives_each_value_a_slot():
  column = fc.categorical_column_with_identity('a', 4)
  ids = fc.transform_features({'a': repeated_ids()}, [column])['a/ids'].numpy()
  np.testing.assert_array_equal(ids, [[1, 1, 3], [0, -1, -1], [3, -1, 2]])


def test_indicator_column_counts_values_at_a_repeated_index():
  column = fc.indicator_column(fc.categorical_column_with_identity('a', 4))
  feats = fc.transform_features({'a': repeated_ids()}, [column])
  layer = fc.DenseFeatures([column])
  out = layer.apply(layer.init(jax.random.PRNGKey(0), feats), feats)
  # tf's indicator fails in SparseToDense; its weighted branch (scatter_nd) sums, as here
  np.testing.assert_array_equal(np.asarray(out), [[0, 2, 0, 1], [1, 0, 0, 0], [0, 0, 1, 1]])


@pytest.mark.parametrize('combiner', ['mean', 'sqrtn', 'sum'])
def test_embedding_column_with_a_repeated_index_equals_tf(combiner):
  column = fc.embedding_column(fc.categorical_column_with_identity('a', 4), 2, combiner=combiner)
  feats = fc.transform_features({'a': repeated_ids()}, [column])
  layer = fc.DenseFeatures([column])
  variables = layer.init(jax.random.PRNGKey(0), feats)
  table = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25], [2.0, 4.0]], np.float32)
  variables = {'params': {'a_embedding': {'embedding_weights': table}}}
  out = layer.apply(variables, feats)
  # what tf's embedding_column calls on the same SparseTensor
  want = tf.nn.safe_embedding_lookup_sparse(tf.constant(table), repeated_ids(), combiner=combiner)
  np.testing.assert_allclose(np.asarray(out), want.numpy(), rtol=1e-6)
  if combiner == 'sum':
    np.testing.assert_allclose(np.asarray(out), [[3.0, 10.0], [1.0, -2.0], [0.5, 4.25]])


def test_weighted_column_pairs_weights_with_the_same_repeated_indices():
  column = fc.weighted_categorical_column(fc.categorical_column_with_identity('a', 4), 'w')
  weights = tf.SparseTensor(REPEATED['indices'], tf.constant([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                            REPEATED['dense_shape'])
  out = fc.transform_features({'a': repeated_ids(), 'w': weights}, [column])
  np.testing.assert_array_equal(out[f'{column.name}/ids'].numpy(),
                                [[1, 1, 3], [0, -1, -1], [3, -1, 2]])
  np.testing.assert_array_equal(out[f'{column.name}/weights'].numpy(),
                                [[1, 2, 3], [4, 0, 0], [6, 0, 5]])


def test_weighted_column_with_a_repeated_index_and_other_weights_is_an_error():
  column = fc.weighted_categorical_column(fc.categorical_column_with_identity('a', 4), 'w')
  weights = tf.ones([3, 3])
  with pytest.raises(tf.errors.InvalidArgumentError, match="'a_weighted_by_w'.*repeat"):
    fc.transform_features({'a': repeated_ids(), 'w': weights}, [column])


def test_repeated_index_inside_a_dataset():
  column = fc.embedding_column(fc.categorical_column_with_identity('a', 4), 2, combiner='sum')
  transform = fc.FeatureTransform([column])
  ds = tf.data.Dataset.from_tensors({'a': repeated_ids()})
  ds = ds.map(lambda f: transform.transform(f, None, je.ModeKeys.PREDICT)[0])
  np.testing.assert_array_equal(next(iter(ds))['a/ids'].numpy(),
                                [[1, 1, 3], [0, -1, -1], [3, -1, 2]])


def test_sparse_labels_without_the_host_transform_are_named(model_dir):
  head = heads.MultiLabelHead(3)

  def model_fn(features, labels, mode):
    return head.create_estimator_spec(features, mode, nn.Dense(3)(features['x']), labels,
                                      optax.sgd(0.1))

  est = je.Estimator(model_fn, model_dir)  # no input_transforms
  with pytest.raises(TypeError, match=r"'labels' is a SparseTensor.*host_transforms\(head\)"):
    est.evaluate(parsed_input(_int_labels, tf.int64))
