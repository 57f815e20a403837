"""The README's demo command works (short runs of both demos)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize('dataset,steps,minimum', [('penguins', 300, 0.9), ('digits', 300, 0.85)])
def test_demo_trains_evaluates_and_predicts(dataset, steps, minimum, tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'jestimator', 'demo', dataset, '--max-steps',
                         str(steps), '--model-dir', str(tmp_path)], capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  accuracy = float(proc.stdout.split('accuracy')[1].split()[0])
  assert accuracy >= minimum, proc.stdout
  assert 'Predictions' in proc.stdout
