"""A worker for test_multiprocess.py: trains, evaluates and predicts, saves what it got.

  python multiprocess_worker.py OUT_DIR MODEL_DIR NUM_PROCESSES PROCESS_ID PORT DEVICES [VARIANT]

With NUM_PROCESSES=1 it is the single-process reference. VARIANT 'die' makes
process 1 exit right after joining, to test that the others fail instead of
hanging. VARIANT 'grain' reads grain datasets sharded with `ShardByJaxProcess`;
with several processes it trains in two calls, the second a new Estimator
that restores each process's grain position from disk. VARIANT
'train_and_evaluate' trains with evaluations at steps 5 and 10.
"""

import os
import sys

out_dir, model_dir, num, pid, port, devices = sys.argv[1:7]
num, pid, devices = int(num), int(pid), int(devices)
os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402

import jestimator as je  # noqa: E402

if num > 1:
  je.distribute.initialize(f'127.0.0.1:{port}', num, pid, timeout_s=60, heartbeat_timeout_s=10)
variant = sys.argv[7] if len(sys.argv) > 7 else 'tf.data'
if variant == 'die' and pid == 1:
  os._exit(3)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from models import make_data  # noqa: E402
import flax.linen as nn  # noqa: E402
import optax  # noqa: E402

HEAD = je.heads.MultiClassHead(3)


def model_fn(features, labels, mode):
  """A head: its loss and metrics honour the evaluation padding mask."""
  h = nn.Dropout(0.1, deterministic=mode != je.ModeKeys.TRAIN)(nn.relu(nn.Dense(16)(features['x'])))
  spec = HEAD.create_estimator_spec(features, mode, nn.Dense(3)(h), labels, optax.adam(1e-2))
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions={**spec.predictions, 'id': features['id']})
  return spec

GLOBAL_BATCH = 32
x, y = make_data(512)


def input_fn(input_context, mode):
  """Each process reads its own slice of every global batch."""
  p = input_context.input_pipeline_id
  local = input_context.get_per_process_batch_size(GLOBAL_BATCH)
  ids = np.arange(len(x))
  ds = tf.data.Dataset.from_tensor_slices(({'x': x, 'id': ids}, y))
  if mode == je.ModeKeys.TRAIN:
    ds = ds.repeat()
  else:
    ds = ds.take(100)
  ds = ds.batch(GLOBAL_BATCH, drop_remainder=mode == je.ModeKeys.TRAIN).map(lambda f, l: (
      {k: v[p * local:(p + 1) * local] for k, v in f.items()}, l[p * local:(p + 1) * local]))
  return ds.filter(lambda f, l: tf.shape(l)[0] > 0)


def grain_input_fn(input_context, mode):
  """Each process reads every process_count-th per-process batch: its slice of every
  global batch, as `input_fn` above, but reading only its own records."""
  import grain  # pylint: disable=import-outside-toplevel
  shard = grain.sharding.ShardByJaxProcess()
  local = input_context.get_per_process_batch_size(GLOBAL_BATCH)
  ds = grain.MapDataset.range(len(x) if mode == je.ModeKeys.TRAIN else 100)
  if mode == je.ModeKeys.TRAIN:
    ds = ds.shuffle(seed=0).repeat()  # the same order in every process
  ds = ds.map(lambda i: ({'x': x[i], 'id': np.int64(i)}, y[i])).batch(local)
  return ds[shard.shard_index::shard.shard_count]


# 'k4': 4 steps per dispatch; the log/save cadence 5 splits stacked elements into spans
config = je.RunConfig(save_checkpoints_steps=5, log_step_count_steps=5,
                      steps_per_loop=4 if variant == 'k4' else 1)
est = je.Estimator(model_fn, model_dir, config)
if variant == 'grain':
  input_fn = grain_input_fn
  if num > 1:
    est.train(input_fn, max_steps=6)
    est = je.Estimator(model_fn, model_dir, config)  # restores params and grain positions
if variant == 'train_and_evaluate':
  metrics, _ = je.train_and_evaluate(est, je.TrainSpec(input_fn, max_steps=10),
                                     je.EvalSpec(input_fn, steps=None, every_n_steps=5))
else:
  est.train(input_fn, max_steps=10)
  metrics = est.evaluate(input_fn)
preds = list(est.predict(input_fn))
params = {n.replace('/', '.'): est.get_variable_value(n) for n in est.get_variable_names()}
np.savez(os.path.join(out_dir, f'params_{num}_{pid}.npz'), **params)
np.savez(os.path.join(out_dir, f'eval_{num}_{pid}.npz'), **metrics)
np.savez(os.path.join(out_dir, f'pred_{num}_{pid}.npz'), id=np.array([p['id'] for p in preds]),
         logits=np.array([p['logits'] for p in preds]))
print('done', jax.process_index(), jax.device_count(), flush=True)
