"""A worker for test_preemption.py's two-process case: trains until preempted.

  python preemption_worker.py MODEL_DIR NUM_PROCESSES PROCESS_ID PORT MARKER_DIR

Each process writes MARKER_DIR/<process id> at step 5, then slows down so a
SIGTERM sent to one of them lands mid-run; it prints the step train() returned at.
"""

import os
import sys
import time

model_dir, num, pid, port, marker_dir = sys.argv[1:6]
num, pid = int(num), int(pid)
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jestimator as je  # noqa: E402

je.distribute.initialize(f'127.0.0.1:{port}', num, pid, timeout_s=60, heartbeat_timeout_s=10)

import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from models import make_data, mlp_model_fn  # noqa: E402

x, y = make_data(512)


def input_fn(input_context):
  ds = tf.data.Dataset.from_tensor_slices(({'x': x}, y)).repeat()
  ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  return ds.batch(8, drop_remainder=True)


class Slow(je.hooks.Hook):
  def after_step(self, ctx):
    if ctx.step == 5:
      open(os.path.join(marker_dir, str(pid)), 'w').close()
    if ctx.step >= 5:
      time.sleep(0.05)


est = je.Estimator(mlp_model_fn, model_dir, je.RunConfig(save_checkpoints_steps=1000,
                                                        progress_bar=False), {})
est.train(input_fn, max_steps=2000, hooks=[Slow()])
print('RETURNED', est.get_variable_value('global_step'), flush=True)
