"""The evaluator job (`run_evaluator`, `jestimator evaluate`): beside a trainer, every
checkpoint is evaluated exactly once, in step order, with the metrics a plain
`evaluate(checkpoint_path=...)` of that step gives."""

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from evaluator_model import make_estimator, train
from jestimator.__main__ import main as cli_main
from jestimator.lifecycle.evaluator import (clear_training_finished, mark_training_finished,
                                            run_evaluator, training_finished_step)

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A model_dir with the checkpoints of steps 3, 6 and 9."""
  model_dir = str(tmp_path_factory.mktemp('trained') / 'model')
  train(model_dir, 9)
  return model_dir


@pytest.fixture
def copy_of_trained(trained, tmp_path):
  """A copy of `trained` that a test may change; no training-finished mark."""
  model_dir = str(tmp_path / 'model')
  shutil.copytree(trained, model_dir, ignore=shutil.ignore_patterns('.jestimator.lock'))
  clear_training_finished(model_dir)
  return model_dir


def _record_evaluations(estimator, before=None, after=None):
  """Wraps `estimator.evaluate`; returns the list of (step, results) it fills, in call
  order. `before(step)` / `after(step)` run around each real evaluation."""
  calls, real = [], estimator.evaluate

  def evaluate(input_fn, steps=None, hooks=None, checkpoint_path=None, name=None):
    step = int(os.path.basename(checkpoint_path))
    if before:
      before(step)
    results = real(input_fn, steps=steps, hooks=hooks, checkpoint_path=checkpoint_path,
                   name=name)
    calls.append((step, results))
    if after:
      after(step)
    return results

  estimator.evaluate = evaluate
  return calls


def _assert_same_results(a, b):
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_every_checkpoint_of_a_running_trainer_is_evaluated_once_in_order(tmp_path, caplog):
  """The trainer (a subprocess) saves steps 3, 6, ..., 15. It waits at step 7 until the
  evaluator has evaluated step 3; the evaluator then comes back only after training
  ended, so steps 6-15 are all new at once: each is still evaluated, oldest first."""
  model_dir, gate = str(tmp_path / 'model'), str(tmp_path / 'gate')
  with open(tmp_path / 'trainer.log', 'w') as log:
    trainer = subprocess.Popen(
        [sys.executable, os.path.join(TESTS, 'evaluator_model.py'), model_dir, '15', gate],
        stdout=log, stderr=subprocess.STDOUT)
  try:
    estimator, spec = make_estimator(model_dir)

    def let_training_finish(step):
      if step == 3:
        open(gate, 'w').close()
        trainer.wait(timeout=300)

    calls = _record_evaluations(estimator, after=let_training_finish)
    with caplog.at_level(logging.INFO, logger='jestimator'):
      results = run_evaluator(estimator, spec, poll_secs=0.1, timeout_secs=300)
    trainer.wait(timeout=300)
  finally:
    trainer.kill()
  assert trainer.returncode == 0, (tmp_path / 'trainer.log').read_text()[-3000:]
  assert [step for step, _ in calls] == [3, 6, 9, 12, 15]
  assert [int(r['global_step']) for _, r in calls] == [3, 6, 9, 12, 15]
  assert results is calls[-1][1]
  assert 'Evaluator: done, training finished at step 15.' in caplog.text
  # The metrics of a step are those of a separate evaluate() of its checkpoint.
  by_step = dict(calls)
  alone, _ = make_estimator(model_dir)
  for step in (3, 12):
    _assert_same_results(by_step[step], alone.evaluate(
        spec.input_fn, checkpoint_path=os.path.join(model_dir, str(step))))
  assert by_step[3]['loss'] > by_step[15]['loss'] + 0.05  # the steps do differ


@pytest.mark.parametrize('stop_at_step,evaluated', [(6, [3, 6]), (7, [3, 6, 9])])
def test_stop_at_step_ends_at_the_first_checkpoint_at_or_past_it(trained, stop_at_step,
                                                                 evaluated):
  estimator, spec = make_estimator(trained)
  calls = _record_evaluations(estimator)
  results = run_evaluator(estimator, spec, stop_at_step=stop_at_step, poll_secs=0.1,
                          timeout_secs=60)
  assert [step for step, _ in calls] == evaluated
  assert int(results['global_step']) == evaluated[-1]


@pytest.mark.parametrize('damage', ['deleted_before', 'deleted_while_read', 'unreadable'])
def test_a_step_deleted_or_damaged_meanwhile_is_skipped(copy_of_trained, damage, caplog):
  """Step 6 goes (keep_checkpoint_max pruning) after the evaluator listed it: while step
  3 is evaluated, or just as step 6's evaluation starts; or its files are damaged."""
  step_6 = os.path.join(copy_of_trained, '6')
  estimator, spec = make_estimator(copy_of_trained)

  def remove_6(step):
    if damage == 'deleted_before' and step == 3:
      shutil.rmtree(step_6)
    if damage == 'deleted_while_read' and step == 6:
      shutil.rmtree(step_6)

  if damage == 'unreadable':
    shutil.rmtree(os.path.join(step_6, 'metadata'))
  calls = _record_evaluations(estimator, before=remove_6)
  with caplog.at_level(logging.INFO, logger='jestimator'):
    results = run_evaluator(estimator, spec, stop_at_step=9, poll_secs=0.1, timeout_secs=60)
  assert [step for step, _ in calls] == [3, 9]
  assert int(results['global_step']) == 9
  skipped = [r for r in caplog.records if 'skipping' in r.getMessage()]
  assert len(skipped) == 1 and 'step 6' in skipped[0].getMessage()
  assert skipped[0].levelno == (logging.WARNING if damage == 'unreadable' else logging.INFO)


def test_the_trainers_finish_mark_ends_the_evaluator(copy_of_trained):
  assert training_finished_step(copy_of_trained) is None
  mark_training_finished(copy_of_trained, 9)
  assert training_finished_step(copy_of_trained) == 9
  estimator, spec = make_estimator(copy_of_trained)
  calls = _record_evaluations(estimator)
  results = run_evaluator(estimator, spec, poll_secs=0.1)  # no timeout: the mark ends it
  assert [step for step, _ in calls] == [3, 6, 9]
  assert int(results['global_step']) == 9
  clear_training_finished(copy_of_trained)
  assert training_finished_step(copy_of_trained) is None


def test_without_a_finish_mark_the_timeout_ends_it(copy_of_trained, tmp_path):
  estimator, spec = make_estimator(copy_of_trained)
  calls = _record_evaluations(estimator)
  results = run_evaluator(estimator, spec, poll_secs=0.05, timeout_secs=0.5)
  assert [step for step, _ in calls] == [3, 6, 9]
  assert int(results['global_step']) == 9
  empty, _ = make_estimator(str(tmp_path / 'empty'))
  assert run_evaluator(empty, spec, poll_secs=0.05, timeout_secs=0.3) is None


def test_cli_evaluates_with_the_modules_estimator_and_prints_the_metrics(trained):
  proc = subprocess.run(
      [sys.executable, '-m', 'jestimator', 'evaluate', '--model_dir', trained, '--module',
       'evaluator_model:make_estimator', '--stop_at_step', '6', '--steps', '2', '--name',
       'cli', '--timeout_secs', '120'],
      capture_output=True, text=True, timeout=300, cwd=TESTS,
      env={**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Evaluation 'cli' at global step 3" in proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert lines[0] == 'Final evaluation at global step 6:'
  printed = dict(line.strip().split(' = ') for line in lines[1:])
  estimator, spec = make_estimator(trained)
  expected = estimator.evaluate(spec.input_fn, steps=2,
                                checkpoint_path=os.path.join(trained, '6'))
  assert sorted(printed) == sorted(expected)
  for key, value in expected.items():
    assert np.asarray(float(printed[key]), value.dtype) == value, key


@pytest.mark.parametrize('module,message', [
    ('evaluator_model', "--module must look like 'pkg.module:function'"),
    ('evaluator_model:no_such_function', "evaluator_model has no function 'no_such_function'"),
])
def test_cli_names_a_bad_module_argument(module, message, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli_main(['evaluate', '--model_dir', str(tmp_path), '--module', module])
  assert exit_info.value.code == 2
  assert message in capsys.readouterr().err
