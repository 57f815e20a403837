"""Chaos: SIGKILL a training process at >= 20 random moments (checkpoint writes
included), restart it each time; the finished parameters equal an uninterrupted
run's bit for bit. Slow (about 2-3 minutes): run with `pytest -m slow`."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import jestimator as je
from models import mlp_model_fn, params_of
from test_checkpoint_resume import PARAMS, input_fn

STEPS = 600
CHILD = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    import conftest  # 8 devices, like the parent
    import jestimator as je
    from models import mlp_model_fn
    from test_checkpoint_resume import PARAMS, input_fn

    class Started(je.hooks.Hook):
      def begin(self, ctx):
        print('STARTED', ctx.step, flush=True)

    config = je.RunConfig(save_checkpoints_steps=2, keep_checkpoint_max=3, progress_bar=False)
    est = je.Estimator(mlp_model_fn, {model_dir!r}, config, PARAMS)
    est.train(input_fn, max_steps={steps}, hooks=[Started()])
    print('DONE', flush=True)
''')


@pytest.mark.slow
def test_twenty_random_sigkills_then_finish_equals_uninterrupted(tmp_path):
  model_dir = str(tmp_path / 'chaos')
  script = CHILD.format(tests=os.path.dirname(__file__), model_dir=model_dir, steps=STEPS)
  rng = random.Random(0)
  kills = 0
  for attempt in range(60):
    proc = subprocess.Popen([sys.executable, '-u', '-c', script], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()  # blocks until training begins (imports, restore)
    if kills >= 20:
      out = line + proc.communicate(timeout=300)[0]
      assert proc.returncode == 0 and 'DONE' in out, out
      break
    assert line.startswith('STARTED'), line
    time.sleep(rng.uniform(0.0, 1.0))  # steps and async checkpoint writes are under way
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    kills += proc.returncode == -signal.SIGKILL
  assert kills >= 20
  chaos = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(save_checkpoints_steps=2), PARAMS)
  assert int(chaos.get_variable_value('global_step')) == STEPS
  whole = je.Estimator(mlp_model_fn, str(tmp_path / 'whole'),
                       je.RunConfig(save_checkpoints_steps=2), PARAMS)
  whole.train(input_fn, max_steps=STEPS)
  for name, value in params_of(whole).items():
    np.testing.assert_array_equal(chaos.get_variable_value(name), value, err_msg=name)
