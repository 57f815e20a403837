"""numpy_input_fn reads by index: full per-epoch shuffles, shards, position-only checkpoints."""

import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import jestimator as je
from jestimator.inputs.host_transform import HostTransform, apply_to_dataset


def _ids(input_fn, **kw):
  """The `id` feature of every batch, concatenated (finite inputs only)."""
  return np.concatenate([f['id'] for f, _ in input_fn(**kw).as_numpy_iterator()])


def _table(n):
  return {'id': np.arange(n), 'x': np.arange(n, dtype=np.float32) * 0.5}, np.arange(n) * 10


def test_shuffle_visits_every_example_once_per_epoch():
  x, y = _table(1000)
  # batch 64 does not divide 1000: batches run across epoch boundaries.
  ids = _ids(je.inputs.numpy_input_fn(x, y, batch_size=64, num_epochs=3, shuffle=True, seed=5))
  assert len(ids) == 3000
  for epoch in ids.reshape(3, 1000):
    np.testing.assert_array_equal(np.sort(epoch), np.arange(1000))
    assert (epoch != np.arange(1000)).mean() > 0.99  # shuffled, not a window of it


def test_each_epoch_has_its_own_order():
  ids = _ids(je.inputs.numpy_input_fn(*_table(1000), batch_size=100, num_epochs=2,
                                      shuffle=True, seed=5)).reshape(2, 1000)
  assert (ids[0] != ids[1]).mean() > 0.99


def test_features_and_labels_of_an_example_stay_together():
  for f, l in je.inputs.numpy_input_fn(*_table(300), batch_size=64, shuffle=True,
                                       seed=1)().as_numpy_iterator():
    np.testing.assert_array_equal(f['x'], f['id'] * 0.5)
    np.testing.assert_array_equal(l, f['id'] * 10)


def test_same_seed_same_order_other_seed_other_order():
  fn = lambda seed: je.inputs.numpy_input_fn(*_table(500), batch_size=50, num_epochs=2,
                                             shuffle=True, seed=seed)
  np.testing.assert_array_equal(_ids(fn(3)), _ids(fn(3)))
  assert (_ids(fn(3)) != _ids(fn(4))).mean() > 0.99


def test_seed_defaults_to_the_run_config_seed():
  fn = lambda seed: je.inputs.numpy_input_fn(*_table(500), batch_size=50, shuffle=True,
                                             seed=seed)
  np.testing.assert_array_equal(_ids(fn(None), config=je.RunConfig(seed=7)), _ids(fn(7)))


def test_without_shuffle_epochs_repeat_in_order():
  ids = _ids(je.inputs.numpy_input_fn(*_table(10), batch_size=4, num_epochs=2, shuffle=False))
  np.testing.assert_array_equal(ids, np.tile(np.arange(10), 2))


@pytest.mark.parametrize('shuffle', [False, True])
def test_two_input_pipelines_read_disjoint_shares_that_cover_the_data(shuffle):
  fn = je.inputs.numpy_input_fn(*_table(1001), batch_size=32, shuffle=shuffle, seed=2)
  shares = [_ids(fn, input_context=je.inputs.InputContext(2, i)) for i in range(2)]
  np.testing.assert_array_equal(np.sort(shares[0]), np.arange(0, 1001, 2))  # as Dataset.shard
  np.testing.assert_array_equal(np.sort(shares[1]), np.arange(1, 1001, 2))


def test_finite_run_has_a_known_cardinality_and_a_smaller_last_batch():
  fn = je.inputs.numpy_input_fn(*_table(10), batch_size=4, num_epochs=3, shuffle=True)
  batches = list(fn().as_numpy_iterator())
  assert int(fn().cardinality()) == len(batches) == 8
  assert [len(f['id']) for f, _ in batches] == [4] * 7 + [2]
  forever = je.inputs.numpy_input_fn(*_table(10), batch_size=4, num_epochs=None, shuffle=True)
  assert int(forever().cardinality()) == tf.data.INFINITE_CARDINALITY


def test_string_features_pass_through_shuffled():
  names = np.array([f'name{i}' for i in range(100)], object)
  fn = je.inputs.numpy_input_fn({'id': np.arange(100), 'name': names}, batch_size=16,
                                shuffle=True, seed=0)
  for f in fn().as_numpy_iterator():
    assert [s.decode() for s in f['name']] == [f'name{i}' for i in f['id']]


def test_pandas_list_column_becomes_a_ragged_feature():
  df = pd.DataFrame({'id': np.arange(4), 'tags': [['a'], [], ['b', 'c'], ['d']]})
  fn = je.inputs.pandas_input_fn(df, batch_size=4, shuffle=False)
  (batch,) = list(fn())
  assert batch['tags'].to_list() == [[b'a'], [], [b'b', b'c'], [b'd']]
  with pytest.raises(ValueError, match="column 'tags' mixes lists and scalars"):
    je.inputs.pandas_input_fn(pd.DataFrame({'tags': [['a'], 'b']}), shuffle=False)


class _Double(HostTransform):

  def transform(self, features, labels, mode):
    return dict(features, x=features['x'] * 2.0), labels


@pytest.mark.parametrize('num_epochs', [None, 2])
@pytest.mark.parametrize('with_transform', [False, True])
def test_iterator_checkpoint_is_a_position_and_resumes_exactly(tmp_path, num_epochs,
                                                              with_transform):
  n = 65536
  x = {'id': np.arange(n), 'x': np.random.RandomState(0).randn(n, 64).astype(np.float32)}
  fn = je.inputs.numpy_input_fn(x, np.arange(n) % 3, batch_size=512, num_epochs=num_epochs,
                                shuffle=True, seed=0)
  make = lambda: apply_to_dataset(fn(), [_Double()], 'train') if with_transform else fn()
  it = iter(make())
  for _ in range(130):  # into the second epoch
    next(it)
  path = tf.train.Checkpoint(iterator=it).write(str(tmp_path / 'iterator'))
  size = sum(os.path.getsize(tmp_path / f) for f in os.listdir(tmp_path))
  assert size <= 2 ** 20  # a 65536-example shuffle buffer would be ~32 MB
  uninterrupted = [next(it) for _ in range(5)]
  resumed = iter(make())
  tf.train.Checkpoint(iterator=resumed).read(path).assert_consumed()
  for want, got in zip(uninterrupted, [next(resumed) for _ in range(5)]):
    tf.nest.map_structure(np.testing.assert_array_equal, want, got)
