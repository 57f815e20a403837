"""tfds_input_fn: TRAIN shuffles (seeded) and repeats, EVAL/PREDICT read each example once,
a dataset that is not prepared fails at once, and 2 processes read disjoint shares."""

import os
import socket
import subprocess
import sys
import time

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds

import jestimator as je
from test_evaluate_predict import Count  # a metric counting the unpadded examples
import tfds_worker
from models import mlp_model_fn, params_of

N = 23  # not a multiple of the batch size


def _hashes(images):
  return [hash(im.tobytes()) for im in images]


def _images(input_fn, mode, batches=None):
  ds = input_fn(mode=mode)
  ds = ds.take(batches) if batches else ds
  return [f['x'] for f, _ in ds.as_numpy_iterator()]


def test_train_yields_shuffled_repeated_batches_of_mnist():
  with tfds.testing.mock_data(num_examples=N):
    fn = je.inputs.tfds_input_fn('mnist', 'train', batch_size=8, shuffle_buffer=100)
    (features, labels), = fn(mode=je.ModeKeys.TRAIN).take(1).as_numpy_iterator()
    train = _images(fn, je.ModeKeys.TRAIN, batches=12)  # 96 examples: 4+ epochs
    ordered = np.concatenate(_images(fn, je.ModeKeys.EVAL))
  assert features['x'].shape == (8, 28, 28, 1) and features['x'].dtype == np.uint8
  assert labels.shape == (8,) and labels.dtype == np.int64
  assert sorted(features) == ['x']
  assert all(len(b) == 8 for b in train)  # drop_remainder in TRAIN: one static shape
  seen = _hashes(np.concatenate(train))
  assert set(seen) == set(_hashes(ordered))  # every example, repeated
  assert seen[:N] != _hashes(ordered)  # in a shuffled order
  assert sorted(seen[:N]) == sorted(_hashes(ordered))  # the first epoch is a permutation


def test_num_epochs_bounds_training_data():
  with tfds.testing.mock_data(num_examples=N):
    fn = je.inputs.tfds_input_fn('mnist', 'train', batch_size=5, num_epochs=2,
                                 drop_remainder=False)
    assert sum(len(b) for b in _images(fn, je.ModeKeys.TRAIN)) == 2 * N


def test_the_same_seed_gives_the_same_order():
  with tfds.testing.mock_data(num_examples=N):
    def order(seed):
      fn = je.inputs.tfds_input_fn('mnist', 'train', 8, shuffle_buffer=100, seed=seed)
      return _hashes(np.concatenate(_images(fn, je.ModeKeys.TRAIN, batches=6)))
    assert order(1) == order(1)
    assert order(1) != order(2)


def test_dict_examples_pick_features_and_label_keys_and_preprocess(tmp_path):
  builder = tfds_worker.prepare(str(tmp_path))
  fn = je.inputs.tfds_input_fn(builder, 'train', 64, as_supervised=False, label_key='label',
                               preprocess=lambda f, l: ({**f, 'x2': f['x'] * 2}, l + 10))
  (features, labels), = fn(mode=je.ModeKeys.EVAL).as_numpy_iterator()
  assert sorted(features) == ['id', 'x', 'x2']
  np.testing.assert_array_equal(labels, features['id'] % 3 + 10)
  np.testing.assert_array_equal(features['x2'][:, 0], 2 * features['id'])
  only_x = je.inputs.tfds_input_fn(builder, 'train', 64, as_supervised=False, features_key='x')
  features, = only_x(mode=je.ModeKeys.PREDICT).as_numpy_iterator()  # no label_key: no labels
  assert sorted(features) == ['x'] and features['x'].shape == (tfds_worker.NUM_EXAMPLES, 4)
  with pytest.raises(ValueError, match='as_supervised=False'):
    je.inputs.tfds_input_fn(builder, 'train', 8, label_key='label')
  with pytest.raises(KeyError, match="'nope'"):
    je.inputs.tfds_input_fn(builder, 'train', 8, as_supervised=False,
                            label_key='nope')(mode=je.ModeKeys.EVAL)


@pytest.mark.parametrize('processes', [2, 3])
def test_each_process_reads_its_own_share_with_its_part_of_the_global_batch(tmp_path,
                                                                             processes):
  builder = tfds_worker.prepare(str(tmp_path))
  fn = je.inputs.tfds_input_fn(builder, 'train', 6 * processes, as_supervised=False,
                               label_key='label')
  shares = []
  for pid in range(processes):
    context = je.inputs.InputContext(num_input_pipelines=processes, input_pipeline_id=pid)
    batches = [f['id'] for f, _ in fn(mode=je.ModeKeys.EVAL,
                                      input_context=context).as_numpy_iterator()]
    assert all(len(b) == 6 for b in batches[:-1])  # the global batch split over processes
    shares.append(set(np.concatenate(batches)))
  assert sum(map(len, shares)) == len(set().union(*shares)) == tfds_worker.NUM_EXAMPLES
  with pytest.raises(ValueError, match='not divisible'):
    fn(input_context=je.inputs.InputContext(num_input_pipelines=5))


def test_training_n_plus_n_steps_equals_2n_steps(tmp_path):
  """The seeded order and the saved iterator (shuffle buffer included): exact resume."""
  builder = tfds_worker.prepare(str(tmp_path / 'data'))
  fn = je.inputs.tfds_input_fn(builder, 'train', 8, as_supervised=False, label_key='label',
                               features_key='x', shuffle_buffer=16, seed=3)
  config = je.RunConfig(save_checkpoints_steps=1000)
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, {})
  whole.train(fn, max_steps=12)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, {})
  split.train(fn, steps=6)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, {})  # all from disk
  split.train(fn, steps=6)
  a, b = params_of(whole), params_of(split)
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def mnist_model_fn(features, labels, mode):
  x = features['x'].astype(jnp.float32).reshape(features['x'].shape[0], -1) / 255.0
  logits = nn.Dense(10)(x)
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions={'logits': logits})
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return je.EstimatorSpec(mode, loss=loss, optimizer=optax.sgd(0.01),
                          eval_metrics={'count': Count.from_model_output(logits[:, 0])})


def test_evaluate_and_predict_see_every_example_once(tmp_path):
  with tfds.testing.mock_data(num_examples=N):
    fn = je.inputs.tfds_input_fn('mnist', 'train', batch_size=8)
    est = je.Estimator(mnist_model_fn, str(tmp_path))
    est.train(fn, max_steps=2)
    assert est.evaluate(je.inputs.tfds_input_fn('mnist', 'test', batch_size=8))['count'] == N
    assert len(list(est.predict(je.inputs.tfds_input_fn('mnist', 'test', 8)))) == N


def test_a_dataset_that_is_not_prepared_fails_at_once(tmp_path):
  start = time.monotonic()
  with pytest.raises(FileNotFoundError, match=r"'mnist.*not prepared.*download_and_prepare"):
    je.inputs.tfds_input_fn('mnist', 'train', 8, data_dir=str(tmp_path))(
        mode=je.ModeKeys.TRAIN)
  assert time.monotonic() - start < 10
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    je.inputs.tfds_input_fn('mnist', 'train', 8, data_dir=str(tmp_path))()


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_read_disjoint_shares_that_cover_the_split(tmp_path):
  data_dir = str(tmp_path / 'data')
  tfds_worker.prepare(data_dir)
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, tfds_worker.__file__, str(tmp_path), data_dir,
                             str(tmp_path / 'model'), '2', str(pid), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for pid in (0, 1)]
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=240)[0])
  finally:
    for p in procs:  # never leave a child behind
      if p.poll() is None:
        p.kill()
        p.wait()
  assert [p.returncode for p in procs] == [0, 0], '\n'.join(l[-3000:] for l in logs)
  ids = [np.load(os.path.join(tmp_path, f'ids_{pid}.npy')) for pid in (0, 1)]
  assert not set(ids[0]) & set(ids[1])  # disjoint
  assert sorted(np.concatenate(ids)) == list(range(tfds_worker.NUM_EXAMPLES))  # covering
  assert sorted(map(len, ids)) == [18, 19]  # even_splits: sizes differ by at most one
