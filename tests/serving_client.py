"""A TF Serving stand-in: loads SavedModels and answers requests with TensorFlow alone.

  python tests/serving_client.py requests.pkl results.pkl

Before TensorFlow is imported, jax, jaxlib, flax, optax, orbax and jestimator are made
unimportable (an import of any of them raises ImportError), so a SavedModel that needed one
fails here. `requests.pkl` holds a list of `(export_dir, signature key, {input: array})`;
`results.pkl` gets, per request, `{output: numpy array}` (or the error's text), plus per
export the signature map as written (`{key: (method name, input keys, output keys)}`), the
signatures `tf.saved_model.load` exposes, and the blocked modules that somehow got imported.
"""

import importlib.abc
import os
import pickle
import sys

BLOCKED = ('jax', 'jaxlib', 'flax', 'optax', 'orbax', 'jestimator')


class _Blocker(importlib.abc.MetaPathFinder):
  """Refuses every module of the blocked packages."""

  def find_spec(self, fullname, path=None, target=None):
    if fullname.split('.')[0] in BLOCKED:
      raise ImportError(f'{fullname} is unimportable in the serving client')
    return None


sys.meta_path.insert(0, _Blocker())
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402  (after the blocker, on purpose)
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402


def written_signatures(export_dir: str) -> dict:
  """`{key: (method_name, sorted input keys, sorted output keys)}` from the SavedModel file."""
  model = saved_model_pb2.SavedModel()
  pb = os.path.join(export_dir, 'saved_model.pb')
  if os.path.exists(pb):
    with open(pb, 'rb') as f:
      model.ParseFromString(f.read())
  else:
    from google.protobuf import text_format  # pylint: disable=import-outside-toplevel
    with open(os.path.join(export_dir, 'saved_model.pbtxt')) as f:
      text_format.Parse(f.read(), model)
  signatures = model.meta_graphs[0].signature_def
  return {k: (s.method_name, sorted(s.inputs), sorted(s.outputs)) for k, s in signatures.items()}


def main(requests_path: str, results_path: str) -> None:
  with open(requests_path, 'rb') as f:
    requests = pickle.load(f)
  loaded, answers = {}, []
  for export_dir, key, inputs in requests:
    if export_dir not in loaded:
      loaded[export_dir] = tf.saved_model.load(export_dir)
    try:
      out = loaded[export_dir].signatures[key](
          **{name: tf.constant(value) for name, value in inputs.items()})
      answers.append({name: value.numpy() for name, value in out.items()})
    except Exception as e:  # noqa: BLE001 -- reported to the test
      answers.append(f'{type(e).__name__}: {e}')
  results = {
      'answers': answers,
      'written': {d: written_signatures(d) for d in loaded},
      'loaded': {d: sorted(m.signatures) for d, m in loaded.items()},
      'imported': sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED),
  }
  with open(results_path, 'wb') as f:
    pickle.dump(results, f)


if __name__ == '__main__':
  main(*sys.argv[1:])
