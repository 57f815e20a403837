"""Bad input to feature columns fails early, with errors that name the column."""

import jax
import numpy as np
import pytest
import tensorflow as tf

import jestimator.feature_column as fc


def test_a_missing_key_names_the_column_and_the_feature():
  column = fc.embedding_column(fc.categorical_column_with_vocabulary_list('island', ['a']), 2)
  with pytest.raises(ValueError, match=r"column 'island'.*feature 'island' is not in the input "
                                       r"features \['sex'\]"):
    fc.transform_features({'sex': tf.constant([['m']])}, [column])


def test_a_vocabulary_file_that_does_not_exist(tmp_path):
  path = str(tmp_path / 'nope.txt')
  with pytest.raises(ValueError, match=r"vocabulary_file 'color'.*nope.txt.*does not exist"):
    fc.categorical_column_with_vocabulary_file('color', path)


def test_a_vocabulary_size_beyond_the_file(tmp_path):
  path = tmp_path / 'v.txt'
  path.write_text('a\nb\n')
  with pytest.raises(ValueError, match=r"'color'.*vocabulary_size 3 is larger than the 2 lines"):
    fc.categorical_column_with_vocabulary_file('color', str(path), vocabulary_size=3)


def test_a_string_fed_to_a_numeric_column():
  with pytest.raises(ValueError, match=r"numeric_column 'age'.*holds string values"):
    fc.transform_features({'age': tf.constant([['12']])}, [fc.numeric_column('age')])


def test_a_numeric_input_of_the_wrong_shape():
  with pytest.raises(ValueError, match=r"numeric_column 'x'.*expected 2 value\(s\)"):
    fc.transform_features({'x': tf.zeros([4, 3])}, [fc.numeric_column('x', shape=2)])


def test_ints_fed_to_a_string_vocabulary():
  column = fc.categorical_column_with_vocabulary_list('s', ['a', 'b'])
  with pytest.raises(ValueError, match=r"column 's'.*holds int64 values but the column takes "
                                       'strings'):
    fc.transform_features({'s': tf.constant([[1]], tf.int64)}, [column])


@pytest.mark.parametrize('size', [0, -3])
def test_hash_bucket_size_below_one(size):
  with pytest.raises(ValueError, match=rf"hash_bucket 'h'.*at least 1, got {size}"):
    fc.categorical_column_with_hash_bucket('h', size)
  with pytest.raises(ValueError, match=rf"crossed_column \['a', 'b'\].*at least 1, got {size}"):
    fc.crossed_column(['a', 'b'], size)


def test_duplicate_column_names():
  a = fc.numeric_column('x')
  b = fc.numeric_column('x', shape=2)
  with pytest.raises(ValueError, match=r"FeatureTransform: duplicate feature column name 'x'"):
    fc.FeatureTransform([a, b])
  with pytest.raises(ValueError, match=r"DenseFeatures: duplicate feature column name 'x'"):
    fc.DenseFeatures([a, b]).init(jax.random.PRNGKey(0), {'x/value': np.zeros((1, 1), np.float32)})


def test_two_columns_writing_the_same_arrays_differently():
  vocab = fc.categorical_column_with_vocabulary_list('s', ['a'])
  hashed = fc.categorical_column_with_hash_bucket('s', 10)
  with pytest.raises(ValueError, match=r"two different columns named 's'"):
    fc.FeatureTransform([fc.indicator_column(vocab), fc.embedding_column(hashed, 2)])


def test_a_sparse_input_needs_a_length_in_a_dataset():
  column = fc.indicator_column(fc.categorical_column_with_hash_bucket('tags', 5))
  ds = tf.data.Dataset.from_tensor_slices({'tags': tf.ragged.constant([['a'], ['b', 'c']])})
  ds = ds.batch(2).map(lambda f: {'tags': f['tags'].to_sparse()})
  with pytest.raises(ValueError, match=r"column 'tags'.*variable-length.*sparse_lengths"):
    ds.map(lambda f: fc.FeatureTransform([column]).transform(f, None, 'train')[0])
  ok = ds.map(lambda f: fc.FeatureTransform([column], {'tags': 3}).transform(f, None, 'train')[0])
  assert next(iter(ok))['tags/ids'].shape == (2, 3)


def test_more_values_than_the_sparse_length():
  column = fc.categorical_column_with_hash_bucket('tags', 5)
  tags = tf.ragged.constant([['a'], ['b', 'c', 'd']]).to_sparse()
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"column 'tags': an example has more "
                                                           r'values than the 2 slots'):
    fc.transform_features({'tags': tags}, [column], sparse_lengths={'tags': 2})


def test_a_categorical_column_in_dense_features():
  column = fc.categorical_column_with_identity('i', 3)
  with pytest.raises(ValueError, match=r"DenseFeatures: column 'i'.*embedding_column or "
                                       'indicator_column'):
    fc.DenseFeatures([column]).init(jax.random.PRNGKey(0), {'i/ids': np.zeros((1, 1), np.int32)})


def test_the_device_half_without_the_host_half():
  column = fc.numeric_column('age')
  with pytest.raises(ValueError, match=r"column 'age': 'age/value' is not in the features "
                                       r"\(\['age'\]\).*FeatureTransform"):
    fc.DenseFeatures([column]).init(jax.random.PRNGKey(0), {'age': np.zeros((2, 1), np.float32)})


def test_a_hash_column_cannot_be_crossed():
  with pytest.raises(ValueError, match=r"hash_bucket 'a' is not supported for crossing"):
    fc.crossed_column([fc.categorical_column_with_hash_bucket('a', 4), 'b'], 10)


def test_shared_embeddings_need_equal_bucket_counts():
  a = fc.categorical_column_with_identity('a', 3)
  b = fc.categorical_column_with_identity('b', 4)
  with pytest.raises(ValueError, match=r"same number of buckets; 'b' has 4, 'a' has 3"):
    fc.shared_embeddings([a, b], 2)
