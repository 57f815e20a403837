"""Checkpoints that fail: damaged steps, a second writer, an unusable model_dir, a full
disk, another model's or optimizer's checkpoint; and nothing executable in model_dir."""

import errno
import glob
import json
import logging
import os
import pickletools
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je
from jestimator.model_dir_lock import LOCK_NAME
from models import make_data, mlp_model_fn, params_of

PARAMS = {'batch_norm': True}
CONFIG = je.RunConfig(save_checkpoints_steps=3, progress_bar=False)
X, Y = make_data(320)


def input_fn():
  """Shuffled, repeated tf.data: resuming needs the saved iterator state."""
  ds = tf.data.Dataset.from_tensor_slices(({'x': X}, Y)).shuffle(100, seed=7)
  return ds.repeat().batch(32, drop_remainder=True)


def eval_input_fn():
  return tf.data.Dataset.from_tensor_slices(({'x': X[:64]}, Y[:64])).batch(32)


def _same(a, b):
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A model_dir trained 6 steps (checkpoints 3 and 6) and its variables at step 6."""
  model_dir = str(tmp_path_factory.mktemp('trained') / 'model')
  est = je.Estimator(mlp_model_fn, model_dir, CONFIG, PARAMS)
  est.train(input_fn, max_steps=6)
  return model_dir, params_of(est)


@pytest.fixture
def copy_of(trained, tmp_path):
  model_dir = str(tmp_path / 'model')
  shutil.copytree(trained[0], model_dir)
  return model_dir


# -- 5. damaged checkpoints -------------------------------------------------------------


def _truncate_array_file(step_dir):
  """Cuts the largest array data file of the orbax `model` item in half."""
  data = max(glob.glob(os.path.join(step_dir, 'model', 'd', '*')), key=os.path.getsize)
  with open(data, 'r+b') as f:
    f.truncate(os.path.getsize(data) // 2)


def _delete_metadata(step_dir):
  os.remove(os.path.join(step_dir, 'metadata', 'metadata'))


def _garble_json(step_dir):
  with open(os.path.join(step_dir, 'model', '_METADATA'), 'w') as f:
    f.write('{"tree_metadata": {"params.Dense_0')


DAMAGES = {'truncated array file': (_truncate_array_file, 'ValueError'),
           'deleted metadata': (_delete_metadata, 'FileNotFoundError'),
           'garbled JSON': (_garble_json, 'JSONDecodeError')}


@pytest.mark.parametrize('damage', sorted(DAMAGES))
def test_train_resumes_from_the_previous_step_when_the_newest_is_damaged(
    trained, copy_of, damage, caplog):
  make_damage, error_name = DAMAGES[damage]
  make_damage(os.path.join(copy_of, '6'))
  est = je.Estimator(mlp_model_fn, copy_of, CONFIG, PARAMS)
  with caplog.at_level(logging.WARNING, logger='jestimator'):
    est.train(input_fn, steps=3)  # from step 3, so 3 + 3 = 6 (from 6 it would be 9)
  assert f'checkpoint {os.path.join(copy_of, "6")} could not be read: {error_name}' in caplog.text
  assert 'falling back to the previous checkpoint' in caplog.text
  assert os.path.isdir(os.path.join(copy_of, '6.unreadable'))  # kept, out of the way
  assert est.get_variable_value('global_step') == 6
  _same(params_of(est), trained[1])  # 3 restored + 3 trained == the uninterrupted 6


@pytest.mark.parametrize('damage', ['truncated array file', 'garbled JSON'])
def test_evaluate_uses_the_previous_step_when_the_newest_is_damaged(copy_of, damage, caplog):
  est = je.Estimator(mlp_model_fn, copy_of, CONFIG, PARAMS)
  at_3 = est.evaluate(eval_input_fn, checkpoint_path=os.path.join(copy_of, '3'))
  DAMAGES[damage][0](os.path.join(copy_of, '6'))
  est = je.Estimator(mlp_model_fn, copy_of, CONFIG, PARAMS)
  with caplog.at_level(logging.WARNING, logger='jestimator'):
    results = est.evaluate(eval_input_fn)
  assert f'checkpoint {os.path.join(copy_of, "6")} could not be read' in caplog.text
  assert results == at_3 and results['global_step'] == 3
  assert os.path.isdir(os.path.join(copy_of, '6'))  # evaluate reads only: nothing moved


def test_all_steps_damaged_is_an_error_not_a_fresh_start(copy_of):
  _truncate_array_file(os.path.join(copy_of, '6'))
  _delete_metadata(os.path.join(copy_of, '3'))
  est = je.Estimator(mlp_model_fn, copy_of, CONFIG, PARAMS)
  with pytest.raises(je.CheckpointReadError,
                     match=r"No checkpoint in model_dir '.*' can be restored.*/6 could not be "
                           r'read: ValueError.*/3 could not be read: FileNotFoundError'):
    est.train(input_fn, steps=3)
  assert sorted(os.listdir(copy_of)) == ['3', '6']  # nothing written, nothing moved
  with pytest.raises(je.CheckpointReadError, match='No checkpoint .* can be restored'):
    est.evaluate(eval_input_fn)


def test_an_explicit_damaged_checkpoint_path_is_named(copy_of):
  _truncate_array_file(os.path.join(copy_of, '6'))
  est = je.Estimator(mlp_model_fn, copy_of, CONFIG, PARAMS)
  with pytest.raises(je.CheckpointReadError, match=r'/6 could not be read: ValueError'):
    est.evaluate(eval_input_fn, checkpoint_path=os.path.join(copy_of, '6'))


# -- 6. one writer per model_dir ------------------------------------------------------------

HOLDER = textwrap.dedent('''
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import conftest
    import jestimator as je
    from models import mlp_model_fn
    from test_checkpoint_robustness import CONFIG, PARAMS, input_fn

    class Pause(je.hooks.Hook):
      def after_step(self, ctx):
        if ctx.step == 3:  # step 3 is saved; hold the lock until the test says go
          ctx.estimator._checkpoints().wait()
          open({ready!r}, 'w').close()
          deadline = time.time() + 200
          while not os.path.exists({go!r}) and time.time() < deadline:
            time.sleep(0.1)

    je.Estimator(mlp_model_fn, {model_dir!r}, CONFIG, PARAMS).train(
        input_fn, max_steps=4, hooks=[Pause()])
''')


def _wait_for(path, proc, timeout=240):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    assert time.time() < deadline, 'the holder never got to its pause'
    time.sleep(0.2)


def test_a_second_trainer_fails_fast_naming_the_live_holder(model_dir, tmp_path):
  ready, go = str(tmp_path / 'ready'), str(tmp_path / 'go')
  script = HOLDER.format(tests=os.path.dirname(__file__), model_dir=model_dir, ready=ready, go=go)
  proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  try:
    _wait_for(ready, proc)
    est = je.Estimator(mlp_model_fn, model_dir, CONFIG, PARAMS)
    started = time.time()
    with pytest.raises(je.ModelDirLockedError,
                       match=f"is being trained by pid {proc.pid} on host "
                             f"'{socket.gethostname()}'.*{LOCK_NAME}.*another model_dir"):
      est.train(input_fn, max_steps=8)
    assert time.time() - started < 10  # fails fast: before any input or compile
    # evaluate needs no lock: it reads the holder's step 3 while it trains
    assert est.evaluate(eval_input_fn)['global_step'] == 3
  finally:
    open(go, 'w').close()
    output = proc.communicate(timeout=240)[0]
  assert proc.returncode == 0, output[-3000:]
  assert not os.path.exists(os.path.join(model_dir, LOCK_NAME))  # released on return
  est.train(input_fn, max_steps=5)
  assert est.get_variable_value('global_step') == 5


def test_a_stale_lock_of_a_dead_process_is_taken_over(model_dir, caplog):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  os.makedirs(model_dir)
  with open(os.path.join(model_dir, LOCK_NAME), 'w') as f:
    json.dump({'pid': dead.pid, 'host': socket.gethostname(), 'started': 'yesterday'}, f)
  est = je.Estimator(mlp_model_fn, model_dir, CONFIG, PARAMS)
  with caplog.at_level(logging.WARNING, logger='jestimator'):
    est.train(input_fn, max_steps=1)
  assert f'left by pid {dead.pid} on host' in caplog.text and 'no longer runs' in caplog.text
  assert est.get_variable_value('global_step') == 1
  assert not os.path.exists(os.path.join(model_dir, LOCK_NAME))


def test_the_lock_is_held_during_train_only(model_dir):
  lock = os.path.join(model_dir, LOCK_NAME)
  seen = {}

  class Probe(je.hooks.Hook):
    def after_step(self, ctx):
      with open(lock) as f:
        seen['holder'] = json.load(f)
      with pytest.raises(je.ModelDirLockedError, match='being trained by this very process'):
        je.Estimator(mlp_model_fn, model_dir, CONFIG, PARAMS).train(input_fn, steps=1)

  class Boom(je.hooks.Hook):
    def after_step(self, ctx):
      raise RuntimeError('boom')

  est = je.Estimator(mlp_model_fn, model_dir, CONFIG, PARAMS)
  est.train(input_fn, max_steps=1, hooks=[Probe()])
  assert seen['holder']['pid'] == os.getpid()
  assert not os.path.exists(lock)
  with pytest.raises(RuntimeError, match='boom'):
    est.train(input_fn, steps=1, hooks=[Boom()])
  assert not os.path.exists(lock)  # released on an exception too


MULTI = textwrap.dedent('''
    import json, os, sys
    import jax
    import jestimator as je
    from jestimator.model_dir_lock import LOCK_NAME, hold_model_dir
    je.distribute.initialize('127.0.0.1:{port}', 2, int(sys.argv[1]), timeout_s=60)
    try:
      with hold_model_dir({model_dir!r}):
        path = os.path.join({model_dir!r}, LOCK_NAME)
        holder = json.load(open(path))['pid'] if os.path.exists(path) else None
        print('HOLDER', jax.process_index(), holder, os.getpid(), flush=True)
        jax.experimental.multihost_utils.sync_global_devices('held')
    except je.ModelDirLockedError as e:
      print('REFUSED', jax.process_index(), e, flush=True)
''')


def _run_two_processes(model_dir) -> tuple[list, list]:
  """Runs MULTI in 2 processes on a fresh port: (their pids, their outputs)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  script = MULTI.format(port=port, model_dir=model_dir)
  procs = [subprocess.Popen([sys.executable, '-c', script, str(i)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
  try:
    out = [p.communicate(timeout=180)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [0, 0], '\n'.join(o[-3000:] for o in out)
  return [p.pid for p in procs], out


@pytest.mark.parametrize('outsider', [False, True])
def test_with_several_processes_only_process_0_locks(model_dir, outsider):
  from jestimator.model_dir_lock import _Lock  # pylint: disable=import-outside-toplevel
  os.makedirs(model_dir)
  held = _Lock(model_dir)
  if outsider:
    held.acquire()  # this test process trains into model_dir
  try:
    # Under a loaded CI machine a child has (rarely) exited 0 without printing its result
    # line after joining the job; run the pair once more then, and show both outputs.
    for _ in range(2):
      pids, out = _run_two_processes(model_dir)
      if all(re.search(rf'^(HOLDER|REFUSED) {i} ', o, re.M) for i, o in enumerate(out)):
        break
  finally:
    held.release()
  shown = '\n=====\n'.join(o[-4000:] for o in out)
  if outsider:
    assert f'REFUSED 0 model_dir {model_dir!r} is being trained by pid {os.getpid()}' in out[0], shown
    assert 'REFUSED 1 another process could not start training into model_dir' in out[1], shown
  else:
    assert f'HOLDER 0 {pids[0]} {pids[0]}' in out[0], shown
    assert f'HOLDER 1 {pids[0]} {pids[1]}' in out[1], shown  # process 0's lock, not its own


# -- 7. clear errors: model_dir, full disk, another model or optimizer -------------------------


def test_model_dir_that_is_a_file_is_named(tmp_path):
  path = tmp_path / 'a_file'
  path.write_text('not a directory')
  est = je.Estimator(mlp_model_fn, str(path), CONFIG, PARAMS)
  with pytest.raises(ValueError, match=f"model_dir '{path}' is a file, not a directory"):
    est.train(input_fn, max_steps=1)
  with pytest.raises(ValueError, match=f"model_dir '{path}' is a file, not a directory"):
    est.evaluate(eval_input_fn)
  below = je.Estimator(mlp_model_fn, str(path / 'model'), CONFIG, PARAMS)
  with pytest.raises(ValueError, match=f"model_dir '{path}/model' is not writable: Not a "
                                       'directory'):
    below.train(input_fn, max_steps=1)


def _unwritable_dirs(tmp_path):
  if os.geteuid() != 0:  # root writes through permissions
    read_only = tmp_path / 'read_only'
    read_only.mkdir(mode=0o555)
    yield str(read_only / 'model')
  if os.path.isdir('/sys') and not os.access('/sys', os.W_OK | os.X_OK) or os.geteuid() == 0:
    yield '/sys/jestimator_model'  # sysfs: no new directories, not even for root


def test_unwritable_model_dir_is_named_before_orbax_touches_it(tmp_path):
  for model_dir in _unwritable_dirs(tmp_path):
    if os.path.exists(model_dir):
      continue
    est = je.Estimator(mlp_model_fn, model_dir, CONFIG, PARAMS)
    with pytest.raises(ValueError, match=f"model_dir '{model_dir}' is not writable: "):
      est.train(input_fn, max_steps=1)


def _expect_disk_full(est, model_dir, step):
  with pytest.raises(je.CheckpointDiskFullError) as raised:
    est.train(input_fn, max_steps=6)
  assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, OSError)
  message = str(raised.value)
  assert f'Disk full: saving the checkpoint of step 6 into model_dir {model_dir!r}' in message
  assert f'The previous checkpoints are intact (the newest is {model_dir}/{step}' in message
  # the older step is still there and restores, in this Estimator and a fresh one
  assert est.latest_checkpoint() == os.path.join(model_dir, str(step))
  fresh = je.Estimator(mlp_model_fn, model_dir, CONFIG, PARAMS)
  assert fresh.evaluate(eval_input_fn)['global_step'] == step
  return fresh


def test_disk_full_during_save_keeps_the_previous_checkpoints(trained, model_dir, monkeypatch):
  """ENOSPC from the lowest Python write orbax makes (etils' Path.write_text: the
  checkpoint's own metadata files), for step 6's files only."""
  from etils.epath import abstract_path  # pylint: disable=import-outside-toplevel
  write_text = abstract_path.Path.write_text

  def full_disk(self, *args, **kwargs):
    if f'{os.sep}6.orbax-checkpoint-tmp' in os.fspath(self):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))
    return write_text(self, *args, **kwargs)

  monkeypatch.setattr(abstract_path.Path, 'write_text', full_disk)
  est = je.Estimator(mlp_model_fn, model_dir, CONFIG, PARAMS)
  fresh = _expect_disk_full(est, model_dir, 3)
  monkeypatch.undo()  # space freed: training resumes from step 3, as if never interrupted
  fresh.train(input_fn, max_steps=6)
  _same(params_of(fresh), trained[1])


def test_disk_full_on_a_real_tiny_file_system(tmp_path):
  mount = tmp_path / 'tiny'
  mount.mkdir()
  if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m', 'tmpfs',
                                          str(mount)], capture_output=True).returncode:
    pytest.skip('needs root and tmpfs mounts')
  try:
    model_dir = str(mount / 'model')
    est = je.Estimator(mlp_model_fn, model_dir, CONFIG, PARAMS)
    est.train(input_fn, max_steps=3)
    free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
    with open(mount / 'filler', 'wb') as f:
      f.write(b'\0' * (free - 8192))
    _expect_disk_full(est, model_dir, 3)
  finally:
    subprocess.run(['umount', '-l', str(mount)], check=False)


@pytest.mark.parametrize('saved,now,expected', [
    ({'batch_norm': True}, {'batch_norm': False, 'hidden': 32},
     [r"in the checkpoint but not in this model: 'batch_stats/BatchNorm_0/mean', "
      r"'batch_stats/BatchNorm_0/var', 'params/BatchNorm_0/bias', 'params/BatchNorm_0/scale'",
      r"'params/Dense_0/kernel' \(checkpoint \(8, 16\) float32, this model \(8, 32\) float32\)"]),
    ({'batch_norm': False}, {'batch_norm': True},
     [r"not in the checkpoint: 'batch_stats/BatchNorm_0/mean', 'batch_stats/BatchNorm_0/var', "
      r"'params/BatchNorm_0/bias', 'params/BatchNorm_0/scale'"]),
])
def test_a_checkpoint_of_another_model_names_the_variables(model_dir, saved, now, expected,
                                                           caplog):
  je.Estimator(mlp_model_fn, model_dir, CONFIG, saved).train(input_fn, max_steps=1)
  est = je.Estimator(mlp_model_fn, model_dir, CONFIG, now)
  with caplog.at_level(logging.WARNING, logger='jestimator'):
    with pytest.raises(je.CheckpointMismatchError, match='was written by another model') as e:
      est.train(input_fn, steps=1)
  for words in expected:
    assert re.search(words, str(e.value)), str(e.value)
  assert 'new model_dir' in str(e.value)
  assert 'falling back' not in caplog.text and os.listdir(model_dir) == ['1']  # not "damaged"


OPTIMIZER_CHANGES = {
    'sgd with momentum': (optax.sgd(0.1, momentum=0.9), [
        "not in the checkpoint: 'opt_state/0/trace/Dense_0/bias'",
        "in the checkpoint but not in this optimizer: 'opt_state/0/count', "
        "'opt_state/0/mu/Dense_0/bias'"]),
    # the same arrays, one more (empty) state in the chain: orbax's "tree structures do not
    # match", named
    'adamw': (optax.adamw(1e-2), ["not in the checkpoint: 'opt_state/2' (no arrays)"]),
}


@pytest.mark.parametrize('change', sorted(OPTIMIZER_CHANGES))
def test_a_changed_optimizer_is_named_with_its_state(model_dir, change):
  def with_optimizer(optimizer):
    def model_fn(features, labels, mode, params):
      spec = mlp_model_fn(features, labels, mode, params)
      return je.EstimatorSpec(mode, predictions=spec.predictions, loss=spec.loss,
                              optimizer=optimizer, eval_metrics=spec.eval_metrics)
    return model_fn

  je.Estimator(with_optimizer(optax.adam(1e-2)), model_dir, CONFIG).train(input_fn, max_steps=1)
  optimizer, expected = OPTIMIZER_CHANGES[change]
  est = je.Estimator(with_optimizer(optimizer), model_dir, CONFIG)
  with pytest.raises(je.CheckpointMismatchError) as e:
    est.train(input_fn, steps=1)
  message = str(e.value)
  assert f'The optimizer state in the checkpoint {model_dir}/1 differs' in message
  assert 'the optimizer changed between runs' in message
  for words in expected:
    assert words in message
  assert 'new model_dir' in message and 'warm-starting' in message


# -- 8. no pickle, nothing executable in model_dir ---------------------------------------


def _is_pickle(data: bytes) -> bool:
  """Whether `data` parses as a whole pickle (protocol 2+ header up to STOP)."""
  if not (data[:1] == b'\x80' and data[1:2] in (b'\x02', b'\x03', b'\x04', b'\x05')):
    return False
  try:
    ops = list(pickletools.genops(data))
  except Exception:  # pylint: disable=broad-except
    return False
  return ops[-1][0].name == 'STOP'


RESTORE_PLAINLY = textwrap.dedent('''
    import json, os, sys
    import numpy as np
    import orbax.checkpoint as ocp
    step = sys.argv[1]
    model = ocp.StandardCheckpointer().restore(os.path.join(step, 'model'))
    train = ocp.StandardCheckpointer().restore(os.path.join(step, 'train'))
    meta = json.load(open(os.path.join(step, 'metadata', 'metadata')))
    position = json.load(open(os.path.join(step, 'input', 'process_0', 'position.json')))
    import jax
    leaves = jax.tree.leaves((model, train))
    assert leaves and all(np.asarray(x).dtype.kind in 'fiub' for x in leaves)
    assert not [m for m in sys.modules if m.startswith('jestimator')]
    print('OK', sorted(model['params']), meta['global_step'], position['kind'])
''')


def test_model_dir_holds_no_pickle_and_restores_without_custom_objects(trained):
  model_dir = trained[0]
  files = [os.path.join(d, f) for d, _, names in os.walk(model_dir) for f in names]
  assert any(f.endswith(os.path.join('input', 'process_0', 'iterator')) for f in files)
  for path in files:
    with open(path, 'rb') as f:
      data = f.read()
    assert not _is_pickle(data), path
    for marker in (b'\x80\x04\x95', b'\x80\x05\x95', b'cloudpickle', b'copy_reg', b'copyreg',
                   b'__reduce__', b'_reconstruct'):
      assert marker not in data, (path, marker)
    if data.startswith(b'\x93NUMPY') or data.startswith(b'PK\x03\x04'):
      with np.load(path, allow_pickle=False) as arrays:  # raises on object arrays
        for name in getattr(arrays, 'files', []):
          assert arrays[name].dtype != object, (path, name)
  proc = subprocess.run([sys.executable, '-c', RESTORE_PLAINLY, os.path.join(model_dir, '6')],
                        capture_output=True, text=True, timeout=180)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "OK ['BatchNorm_0', 'Dense_0', 'Dense_1'] 6 tf.data" in proc.stdout
