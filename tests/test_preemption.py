"""Preemption: SIGTERM (or Ctrl-C in a script) saves at the current step and returns."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

import jestimator as je
from models import mlp_model_fn, params_of
from test_checkpoint_resume import PARAMS, input_fn

CHILD = textwrap.dedent('''
    import os, sys, time
    sys.path.insert(0, {tests!r})
    import conftest  # 8 devices, like the parent
    import jestimator as je
    from models import mlp_model_fn
    from test_checkpoint_resume import PARAMS, input_fn

    class Slow(je.hooks.Hook):
      """Marks step 5 for the parent, then slows down so the signal lands mid-run."""
      def after_step(self, ctx):
        if ctx.step == 5:
          open({marker!r}, 'w').close()
        if ctx.step >= 5:
          time.sleep(0.05)

    config = je.RunConfig(save_checkpoints_steps=1000)
    est = je.Estimator(mlp_model_fn, {model_dir!r}, config, PARAMS)
    est.train(input_fn, max_steps=400, hooks=[Slow()])
    print('RETURNED', est.get_variable_value('global_step'), flush=True)
''')


def _train_and_signal(tmp_path, signum):
  model_dir, marker = str(tmp_path / 'preempted'), str(tmp_path / 'marker')
  script = CHILD.format(tests=os.path.dirname(__file__), model_dir=model_dir, marker=marker)
  proc = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while not os.path.exists(marker):
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    assert time.monotonic() < deadline, 'the child never reached step 5'
    time.sleep(0.05)
  proc.send_signal(signum)
  out, err = proc.communicate(timeout=120)
  return model_dir, proc.returncode, out, err


def _resumed_equals_uninterrupted(tmp_path, model_dir):
  config = je.RunConfig(save_checkpoints_steps=1000)
  resumed = je.Estimator(mlp_model_fn, model_dir, config, PARAMS)
  stopped_at = int(resumed.get_variable_value('global_step'))
  assert 5 <= stopped_at < 400
  resumed.train(input_fn, max_steps=stopped_at + 6)
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'), config, PARAMS)
  whole.train(input_fn, max_steps=stopped_at + 6)
  for name, value in params_of(whole).items():
    np.testing.assert_array_equal(resumed.get_variable_value(name), value, err_msg=name)


def test_sigterm_saves_the_current_step_returns_and_resumes_exactly(tmp_path):
  model_dir, code, out, err = _train_and_signal(tmp_path, signal.SIGTERM)
  assert code == 0, err[-3000:]
  assert 'SIGTERM received: stopping at global step' in err
  step = int(out.split('RETURNED')[1])
  assert je.Estimator(mlp_model_fn, model_dir).latest_checkpoint().endswith(f'/{step}')
  _resumed_equals_uninterrupted(tmp_path, model_dir)


def test_ctrl_c_in_a_script_saves_too(tmp_path):
  model_dir, code, _, err = _train_and_signal(tmp_path, signal.SIGINT)
  assert code == 0, err[-3000:]
  assert 'SIGINT received' in err
  _resumed_equals_uninterrupted(tmp_path, model_dir)


def test_handlers_are_restored_after_train(model_dir):
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  je.Estimator(mlp_model_fn, model_dir, je.RunConfig(), PARAMS).train(input_fn, max_steps=2)
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_two_processes_stop_at_the_same_step_when_one_gets_sigterm(tmp_path):
  """JAX's preemption sync point: a SIGTERM to process 1 stops both at one step."""
  import socket
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  model_dir, markers = str(tmp_path / 'model'), tmp_path / 'markers'
  markers.mkdir()
  worker = os.path.join(os.path.dirname(__file__), 'preemption_worker.py')
  procs = [subprocess.Popen([sys.executable, worker, model_dir, '2', str(i), str(port),
                             str(markers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  try:
    deadline = time.monotonic() + 240
    while len(os.listdir(markers)) < 2:
      assert all(p.poll() is None for p in procs), procs[0].stderr.read()[-3000:]
      assert time.monotonic() < deadline, 'the workers never reached step 5'
      time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    results = [p.communicate(timeout=120) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (out, err) in zip(procs, results):
    assert p.returncode == 0, err[-3000:]
  steps = [int(out.split('RETURNED')[1]) for out, _ in results]
  assert steps[0] == steps[1] and 5 <= steps[0] < 2000
  est = je.Estimator(mlp_model_fn, model_dir)
  assert est.latest_checkpoint().endswith(f'/{steps[0]}')
