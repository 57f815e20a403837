"""A tiny local TFDS dataset, and a worker for test_tfds_input.py's 2-process test.

`TinyIds` ('jestimator_test_tiny_ids') is built offline into a tmp data_dir:
NUM_EXAMPLES examples {'x': float32 [4], 'id': int64, 'label': 0..2}, so a test
can see which examples each process read.

  python tfds_worker.py OUT_DIR DATA_DIR MODEL_DIR NUM_PROCESSES PROCESS_ID PORT

predicts over the 'train' split with `tfds_input_fn` (each process reads its
own share) and saves the ids it predicted to OUT_DIR/ids_{PROCESS_ID}.npy.
"""

import os
import sys

import numpy as np
import tensorflow_datasets as tfds

NUM_EXAMPLES = 37  # odd: the two shares differ in size


class TinyIds(tfds.core.GeneratorBasedBuilder):
  """Examples numbered by 'id', built without a network."""

  VERSION = tfds.core.Version('1.0.0')
  name = 'jestimator_test_tiny_ids'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            'x': tfds.features.Tensor(shape=(4,), dtype=np.float32),
            'id': np.int64,
            'label': tfds.features.ClassLabel(num_classes=3)}),
        supervised_keys=('x', 'label'))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples(NUM_EXAMPLES)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {'x': np.full((4,), i, np.float32), 'id': i, 'label': i % 3}


def prepare(data_dir: str) -> TinyIds:
  builder = TinyIds(data_dir=data_dir)
  builder.download_and_prepare()
  return builder


def main():
  out_dir, data_dir, model_dir, num, pid, port = sys.argv[1:7]
  num, pid = int(num), int(pid)
  os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=1'
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jestimator as je  # pylint: disable=import-outside-toplevel
  je.distribute.initialize(f'127.0.0.1:{port}', num, pid, timeout_s=60, heartbeat_timeout_s=10)

  def model_fn(features, mode):
    return je.EstimatorSpec(mode, predictions={'id': features['id'],
                                               'y': nn.Dense(1)(features['x'])[:, 0]})

  input_fn = je.inputs.tfds_input_fn(TinyIds(data_dir=data_dir), 'train', batch_size=8,
                                     as_supervised=False, label_key='label')
  est = je.Estimator(model_fn, model_dir)
  ids = np.array([p['id'] for p in est.predict(input_fn)], np.int64)
  np.save(os.path.join(out_dir, f'ids_{pid}.npy'), ids)
  print('done', pid, len(ids), flush=True)


if __name__ == '__main__':
  main()
