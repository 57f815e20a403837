"""The model, inputs and trainer process of tests/test_evaluator.py.

  make_estimator(model_dir) -> (Estimator, EvalSpec)  # also the CLI's --module target
  python evaluator_model.py MODEL_DIR MAX_STEPS GATE  # the trainer process

The trainer saves every 3 steps and keeps them all. At step 7 (step 3's
checkpoint finished, step 6's being written) it waits until the file GATE
exists, so the test's evaluator is known to run while training is under way.
"""

import os
import sys
import time

import tensorflow as tf

import jestimator as je
from jestimator.lifecycle.specs import EvalSpec
from models import make_data, mlp_model_fn

SAVE_EVERY = 3
GATE_STEP = 7


X, Y = make_data(352)  # 256 to train on, 96 held out


def train_input_fn():
  x, y = X[:256], Y[:256]
  ds = tf.data.Dataset.from_tensor_slices(({'x': x}, y)).shuffle(64, seed=3)
  return ds.repeat().batch(16, drop_remainder=True)


def eval_input_fn():
  """96 held-out examples in 6 batches (finite: each evaluation reads all of them)."""
  x, y = X[256:], Y[256:]
  return tf.data.Dataset.from_tensor_slices(({'x': x}, y)).batch(16)


def make_estimator(model_dir):
  config = je.RunConfig(save_checkpoints_steps=SAVE_EVERY, keep_checkpoint_max=None,
                        log_step_count_steps=None, progress_bar=False)
  estimator = je.Estimator(mlp_model_fn, model_dir, config, {'learning_rate': 0.05})
  return estimator, EvalSpec(eval_input_fn, steps=None)


class WaitForGate(je.hooks.Hook):
  """Holds training at GATE_STEP until `gate` exists (at most 300 s)."""

  def __init__(self, gate):
    self.gate = gate

  def after_step(self, run_context):
    if run_context.step != GATE_STEP:
      return
    deadline = time.monotonic() + 300
    while not os.path.exists(self.gate):
      if time.monotonic() > deadline:
        raise TimeoutError(f'{self.gate} never appeared: no evaluator ran.')
      time.sleep(0.05)


def train(model_dir, max_steps, gate=None):
  estimator, _ = make_estimator(model_dir)
  estimator.train(train_input_fn, max_steps=max_steps,
                  hooks=[WaitForGate(gate)] if gate else [])


if __name__ == '__main__':
  train(sys.argv[1], int(sys.argv[2]), sys.argv[3])
