"""TensorFlow is imported on first use: never by `import jestimator` or a numpy-fed Estimator.

Each check runs in a fresh interpreter (this test process has TensorFlow
loaded by conftest), with the environment of the tests.
"""

import collections
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from jestimator import tf_import
from jestimator.inputs import fingerprint

_ESTIMATOR = '''
import flax.linen as nn, numpy as np, optax
import jestimator as je

def model_fn(features, labels, mode):
  logits = nn.Dense(3)(features['x'])
  loss = (None if labels is None else
          optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())
  return je.EstimatorSpec(mode, loss=loss, predictions={'class': logits.argmax(-1)},
                          optimizer=optax.sgd(0.1))

x = np.random.RandomState(0).randn(8, 4).astype(np.float32)
y = np.arange(8, dtype=np.int32) % 3
est = je.Estimator(model_fn, MODEL_DIR, je.RunConfig(seed=0, progress_bar=False))
'''


def _run(code: str, model_dir) -> list[str]:
  """Runs `code` in a fresh interpreter; its stdout's last line, split."""
  env = dict(os.environ, XLA_FLAGS='')  # one CPU device: enough, and faster to start
  proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code).replace(
      'MODEL_DIR', repr(str(model_dir)))], capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout.strip().splitlines()[-1].split()


def test_import_does_not_import_tensorflow_and_a_later_import_skips_keras(tmp_path):
  code = '''
import sys, jestimator
before = 'tensorflow' in sys.modules
import tensorflow as tf  # the user's own import: jestimator's hook keeps Keras out of it
print(before, 'keras' in sys.modules, tf.constant(2.0).numpy())
'''
  assert _run(code, tmp_path) == ['False', 'False', '2.0']


def test_numpy_fed_train_evaluate_predict_do_not_import_tensorflow(tmp_path):
  code = _ESTIMATOR + '''
import sys
import jestimator.summary
written = []  # TensorBoard scalars are written with tf.summary: recorded instead
jestimator.summary.write_eval_results = lambda *args: written.append(args)
batches = lambda: [({'x': x}, y)] * 2
est.train(batches, max_steps=3)
after_train = 'tensorflow' in sys.modules
results = est.evaluate(batches)
after_evaluate = 'tensorflow' in sys.modules
predictions = list(est.predict(lambda: iter([{'x': x}])))
print(after_train, after_evaluate, 'tensorflow' in sys.modules, len(predictions), len(written),
      int(results['global_step']))
'''
  assert _run(code, tmp_path) == ['False', 'False', 'False', '8', '1', '2']


def test_numpy_input_fn_imports_tensorflow_without_keras(tmp_path):
  code = _ESTIMATOR + '''
import sys
est.train(je.inputs.numpy_input_fn({'x': x}, y, batch_size=4, num_epochs=1, shuffle=False),
          max_steps=2)
print('tensorflow' in sys.modules, 'keras' in sys.modules)
'''
  assert _run(code, tmp_path) == ['True', 'False']


@pytest.mark.parametrize('structure', [
    ({'x': 1, 'a': None}, 2), [1, (2, 3)], {'z': {'q': 1, 'c': [2]}, 'a': 3}, 'leaf', None])
def test_iterable_fingerprint_layout_matches_tf_nest(structure):
  """A numpy input's fingerprint is computed without TF, as tf.nest computed it before."""
  pair = collections.namedtuple('Pair', 'b a')
  for s in (structure, pair(structure, 1), collections.OrderedDict([('z', structure), ('a', 1)])):
    layout, leaves = fingerprint._nest(s)  # pylint: disable=protected-access
    assert repr(layout) == repr(tf.nest.map_structure(lambda _: 0, s))
    assert leaves == tf.nest.flatten(s)


def test_is_dataset_and_maybe_tf_once_tensorflow_is_imported():
  assert tf_import.maybe_tf() is tf and tf_import.tf_loaded()
  assert tf_import.is_dataset(tf.data.Dataset.range(2))
  assert not tf_import.is_dataset(np.arange(2)) and not tf_import.is_dataset([np.arange(2)])
  assert tf_import.tf.constant is tf.constant  # the lazy module reads through
