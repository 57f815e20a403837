"""Real multi-process JAX (jax.distributed on 127.0.0.1, gloo CPU collectives).

2 processes x 2 CPU devices give the parameters and eval metrics of 1 process x
4 devices for the same global data; each process predicts its own examples;
a process that dies makes the other fail within a bound instead of hanging.
"""

import glob
import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), 'multiprocess_worker.py')
TIMEOUT = 240


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run(args_per_process, timeout=TIMEOUT):
  procs = [subprocess.Popen([sys.executable, WORKER, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for args in args_per_process]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:  # never leave a child behind, whatever happened
      if p.poll() is None:
        p.kill()
        p.wait()
  return [p.returncode for p in procs], outputs


def run_two_processes_and_one(tmp_path, mode: str = 'tf.data') -> None:
  """Runs the worker as 1 process x 4 devices, then 2 x 2, and checks that they agree."""
  out = str(tmp_path)
  codes, logs = _run([(out, tmp_path / 'single', 1, 0, 0, 4, mode)])
  assert codes == [0], logs[0][-3000:]
  port = _free_port()
  codes, logs = _run([(out, tmp_path / 'multi', 2, pid, port, 2, mode) for pid in (0, 1)])
  assert codes == [0, 0], '\n'.join(l[-3000:] for l in logs)
  single = np.load(os.path.join(out, 'params_1_0.npz'))
  for pid in (0, 1):
    multi = np.load(os.path.join(out, f'params_2_{pid}.npz'))
    assert sorted(single) == sorted(multi)
    for name in single:
      np.testing.assert_allclose(single[name], multi[name], rtol=1e-5, atol=1e-5, err_msg=name)
    e1, e2 = np.load(os.path.join(out, 'eval_1_0.npz')), np.load(os.path.join(out, f'eval_2_{pid}.npz'))
    for key in ('accuracy', 'loss', 'global_step'):
      np.testing.assert_allclose(e1[key], e2[key], rtol=1e-5, err_msg=key)
  # each process predicted its own half of every global batch; together, all 100 examples
  p1 = np.load(os.path.join(out, 'pred_1_0.npz'))
  ids = np.concatenate([np.load(os.path.join(out, f'pred_2_{pid}.npz'))['id'] for pid in (0, 1)])
  assert sorted(ids) == list(range(100))
  for pid in (0, 1):
    part = np.load(os.path.join(out, f'pred_2_{pid}.npz'))
    np.testing.assert_allclose(part['logits'], p1['logits'][part['id']], rtol=1e-5, atol=1e-5)


def test_two_processes_equal_one_process(tmp_path):
  run_two_processes_and_one(tmp_path)


def test_steps_per_loop_with_two_processes_equals_one(tmp_path):
  run_two_processes_and_one(tmp_path, 'k4')


def test_train_and_evaluate_with_two_processes_equals_one(tmp_path):
  from jestimator.summary import read_scalars  # pylint: disable=import-outside-toplevel
  run_two_processes_and_one(tmp_path, 'train_and_evaluate')
  single = read_scalars(str(tmp_path / 'single' / 'eval'))
  multi = read_scalars(str(tmp_path / 'multi' / 'eval'))  # written by process 0 only
  assert [s for s, _ in multi['loss']] == [5, 10] == [s for s, _ in single['loss']]
  np.testing.assert_allclose([v for _, v in multi['loss']], [v for _, v in single['loss']],
                             rtol=1e-5)
  assert len(glob.glob(str(tmp_path / 'multi' / 'eval' / 'events.out.tfevents.*'))) == 1


def test_a_dead_process_makes_the_other_fail_not_hang(tmp_path):
  port = _free_port()
  codes, logs = _run([(tmp_path, tmp_path / 'm', 2, pid, port, 2, 'die') for pid in (0, 1)],
                     timeout=150)
  assert codes[1] == 3
  assert codes[0] not in (0, None), logs[0][-2000:]


def test_unreachable_coordinator_is_a_clear_error_within_the_timeout():
  script = ('import jestimator as je\n'
            f"je.distribute.initialize('127.0.0.1:{_free_port()}', 2, 1, timeout_s=3)\n")
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode != 0
  assert 'process 1 of 2 could not join the coordinator' in proc.stderr
