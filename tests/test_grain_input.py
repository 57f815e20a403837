"""grain as an input engine: grain datasets and DataLoaders train, evaluate and predict;
their position is grain's own iterator state (a few bytes), set back on restore without
re-reading a record; 2 processes x 2 devices with grain sharding equal 1 x 4."""

import json

import numpy as np
import pytest
import tensorflow as tf

import jestimator as je
from models import make_data, mlp_model_fn, params_of
from test_input_engine import _recording_estimator, _seen
from test_multiprocess import run_two_processes_and_one

grain = pytest.importorskip('grain')

PARAMS = {'dropout': 0.3, 'batch_norm': True}
X, Y = make_data(640)


class Examples:
  """The first `n` examples as a grain data source that logs the indices it serves."""

  def __init__(self, n: int = len(X)):
    self.n, self.served = n, []

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    self.served.append(int(i))
    return {'x': X[i]}, Y[i]

  def __repr__(self):  # grain checks a DataLoader's source by repr on restore
    return f'Examples({self.n})'


def map_dataset_input_fn():
  return grain.MapDataset.source(Examples()).shuffle(seed=3).repeat().batch(32)


def iter_dataset_input_fn():
  ds = grain.MapDataset.source(Examples()).shuffle(seed=3).repeat()
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=0)).batch(32)


def data_loader_input_fn():
  sampler = grain.samplers.IndexSampler(len(X), shuffle=True, seed=3)
  return grain.DataLoader(data_source=Examples(), sampler=sampler,
                          operations=[grain.transforms.Batch(32, drop_remainder=True)])


def _assert_same(a, b):
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize('input_fn,steps_per_loop', [
    (map_dataset_input_fn, 1), (iter_dataset_input_fn, 1), (data_loader_input_fn, 1),
    (map_dataset_input_fn, 3)])
def test_grain_input_trains_and_resumes_exactly(tmp_path, input_fn, steps_per_loop):
  """7 + 5 steps (a hook stops the first call between saves; a new Estimator restores
  from disk) equal 12 steps, bit for bit."""
  config = je.RunConfig(save_checkpoints_steps=4, prefetch_batches=3,
                        steps_per_loop=steps_per_loop)
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, PARAMS)
  whole.train(input_fn, max_steps=12)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  split.train(input_fn, max_steps=100, hooks=[je.hooks.StopAtStepHook(last_step=7)])
  assert split.latest_checkpoint().endswith('/7')  # the feeder had read ahead to 8
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  split.train(input_fn, max_steps=12)
  _assert_same(params_of(whole), params_of(split))


def test_saved_position_is_a_few_bytes_and_restore_reads_no_consumed_record(tmp_path):
  source = Examples()

  def input_fn():  # no read threads: the source serves only what the loop asks for
    ds = grain.MapDataset.source(source).shuffle(seed=3).batch(32)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=0))

  model_dir = str(tmp_path / 'model')
  config = je.RunConfig(save_checkpoints_steps=100)
  je.Estimator(mlp_model_fn, model_dir, config, PARAMS).train(input_fn, max_steps=6)
  assert len(source.served) == 6 * 32
  consumed, source.served = set(source.served), []

  item = tmp_path / 'model' / '6' / 'input'
  assert sum(f.stat().st_size for f in item.rglob('*') if f.is_file()) < 2048
  position = json.loads((item / 'process_0' / 'position.json').read_text())
  assert position['kind'] == 'grain' and position['batches'] == 6

  je.Estimator(mlp_model_fn, model_dir, config, PARAMS).train(input_fn, max_steps=12)
  # the new input's first batch (read for its fingerprint), then batches 6..11 only
  assert set(source.served[:32]) <= consumed
  assert len(source.served) == 32 + 6 * 32
  assert not consumed & set(source.served[32:])


def test_evaluate_and_predict_read_every_example_once(model_dir):
  est = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(), PARAMS)
  est.train(map_dataset_input_fn, max_steps=5)
  source = Examples(100)  # batches of 32, 32, 32 and 4
  metrics = est.evaluate(lambda: grain.MapDataset.source(source).batch(32))
  assert sorted(source.served) == list(range(100))
  reference = est.evaluate(
      lambda: tf.data.Dataset.from_tensor_slices(({'x': X[:100]}, Y[:100])).batch(32))
  for key in ('accuracy', 'loss'):
    np.testing.assert_allclose(metrics[key], reference[key], rtol=1e-6, err_msg=key)

  source.served = []
  preds = list(est.predict(lambda: grain.MapDataset.source(source).batch(32)))
  assert sorted(source.served) == list(range(100))
  expected = list(est.predict(lambda: tf.data.Dataset.from_tensor_slices({'x': X[:100]}).batch(32)))
  np.testing.assert_allclose([p['logits'] for p in preds], [p['logits'] for p in expected],
                             rtol=1e-6)


def _grain_range(lo, hi):
  def input_fn():
    ds = grain.MapDataset.range(lo, hi)
    return ds.map(lambda v: ({'x': np.full(1, v, np.float32)}, np.float32(v))).batch(1)
  return input_fn


@pytest.mark.parametrize('new_estimator', [False, True])
def test_another_grain_input_starts_at_its_own_first_batch(model_dir, new_estimator):
  est = _recording_estimator(model_dir)
  est.train(_grain_range(0, 1000), max_steps=3)
  assert _seen(est) == 2.0
  if new_estimator:
    est = _recording_estimator(model_dir)
  est.train(_grain_range(5000, 6000), max_steps=5)
  assert _seen(est) == 5001.0  # its own batches 5000, 5001
  est.train(_grain_range(5000, 6000), max_steps=7)  # the same input resumes
  assert _seen(est) == 5003.0


def test_two_processes_with_grain_sharding_equal_one_process(tmp_path):
  """Each process reads its slice of every global batch (`ShardByJaxProcess`); the
  2-process run trains in two calls, restoring each process's grain position."""
  run_two_processes_and_one(tmp_path, 'grain')
