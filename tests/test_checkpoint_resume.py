"""Checkpoints: N + N steps == 2N steps (same data, same order), also after a crash."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import jestimator as je
from models import make_data, mlp_model_fn, params_of

PARAMS = {'dropout': 0.3, 'batch_norm': True}


def input_fn():
  """Shuffled (seeded), repeated tf.data: the iterator position matters."""
  x, y = make_data(320)
  ds = tf.data.Dataset.from_tensor_slices(({'x': x}, y)).shuffle(100, seed=7)
  return ds.repeat().batch(32, drop_remainder=True).prefetch(2)


def iterable_input_fn():
  """A plain Python iterable of numpy batches (position = batches consumed)."""
  x, y = make_data(320)
  return [({'x': x[i:i + 32]}, y[i:i + 32]) for i in range(0, 320, 32)] * 3


def _assert_same(a, b):
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize('make_input', [input_fn, iterable_input_fn])
def test_n_plus_n_equals_2n(tmp_path, make_input):
  config = je.RunConfig(save_checkpoints_steps=1000, keep_checkpoint_max=2)
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, PARAMS)
  whole.train(make_input, max_steps=14)
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  split.train(make_input, steps=7)
  # a new Estimator object: everything comes back from disk
  split = je.Estimator(mlp_model_fn, str(tmp_path / 'split'), config, PARAMS)
  split.train(make_input, steps=7)
  _assert_same(params_of(whole), params_of(split))


CHILD = textwrap.dedent('''
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import conftest  # 8 devices, like the parent
    import jestimator as je
    from models import mlp_model_fn
    from test_checkpoint_resume import PARAMS, input_fn

    class CrashAfterCheckpoint(je.hooks.Hook):
      def after_step(self, ctx):
        if ctx.step == 9:  # step 6's checkpoint is on disk; die without cleanup
          ctx.estimator._checkpoints().wait()
          os.kill(os.getpid(), signal.SIGKILL)

    config = je.RunConfig(save_checkpoints_steps=6)
    est = je.Estimator(mlp_model_fn, {model_dir!r}, config, PARAMS)
    est.train(input_fn, max_steps=12, hooks=[CrashAfterCheckpoint()])
''')


def test_resume_after_crash_equals_uninterrupted(tmp_path):
  crashed_dir = str(tmp_path / 'crashed')
  script = CHILD.format(tests=os.path.dirname(__file__), model_dir=crashed_dir)
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  config = je.RunConfig(save_checkpoints_steps=6)
  resumed = je.Estimator(mlp_model_fn, crashed_dir, config, PARAMS)
  assert resumed.latest_checkpoint().endswith('6')
  resumed.train(input_fn, max_steps=12)
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, PARAMS)
  whole.train(input_fn, max_steps=12)
  _assert_same(params_of(whole), params_of(resumed))


def test_checkpoint_holds_state_input_and_metadata(tmp_path):
  est = je.Estimator(mlp_model_fn, str(tmp_path), je.RunConfig(save_checkpoints_steps=3,
                                                               keep_checkpoint_max=2), PARAMS)
  est.train(input_fn, max_steps=9)
  store = est._checkpoints()
  assert store.all_steps() == [6, 9]
  assert {'input', 'metadata', 'model', 'train'} <= set(os.listdir(store.path(9)))
  assert os.listdir(os.path.join(store.path(9), 'input', 'process_0'))
  meta = store.metadata(9)
  assert meta['global_step'] == 9
  with open(os.path.join(store.path(9), 'input', 'process_0', 'position.json')) as f:
    position = json.load(f)
  assert position['batches'] == 9 and position['kind'] == 'tf.data'
  assert position['fingerprint'].startswith('tf.data:')
  assert meta['signature']['features'] == {'x': [[32, 8], 'float32']}
  assert not any(name.endswith('.pkl') for _, _, files in os.walk(str(tmp_path))
                 for name in files)


def test_interrupted_save_is_invisible(tmp_path):
  """A step directory that never finished (orbax tmp dir) is not 'latest'."""
  est = je.Estimator(mlp_model_fn, str(tmp_path), je.RunConfig(save_checkpoints_steps=4), PARAMS)
  est.train(input_fn, max_steps=4)
  os.makedirs(os.path.join(str(tmp_path), '8.orbax-checkpoint-tmp-123', 'model'))
  est2 = je.Estimator(mlp_model_fn, str(tmp_path), je.RunConfig(save_checkpoints_steps=4), PARAMS)
  assert est2.latest_checkpoint().endswith('4')
  est2.train(input_fn, max_steps=8)
  assert est2.get_variable_value('global_step') == 8
