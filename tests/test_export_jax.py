"""The JAX artifact (`Estimator.export_jax`, `load_jax`): served without TensorFlow or
jestimator it predicts what `Estimator.predict` does, for any batch size; a failed export
leaves nothing behind; bad features are named."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je
from jestimator.export import jax_artifact
from jestimator.export.jax_artifact import load_jax
from models import make_data, mlp_model_fn

X, Y = make_data(128)
PARAMS = {'hidden': 8, 'batch_norm': True, 'dropout': 0.3}  # batch_stats and a dropout stream


def _train(model_dir, model_fn=mlp_model_fn, transforms=(), max_steps=4):
  est = je.Estimator(model_fn, str(model_dir), je.RunConfig(save_checkpoints_steps=2,
                                                            save_summary_steps=None),
                     PARAMS, input_transforms=transforms)
  return est.train(je.inputs.numpy_input_fn({'x': X}, Y, batch_size=32, shuffle=True,
                                            num_epochs=None, seed=0), max_steps=max_steps)


def _predict(est, x, checkpoint_path=None) -> dict:
  out = list(est.predict(je.inputs.numpy_input_fn({'x': x}, batch_size=16, shuffle=False),
                         checkpoint_path=checkpoint_path))
  return {k: np.stack([p[k] for p in out]) for k in out[0]}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  return _train(tmp_path_factory.mktemp('model'))


# A serving process: TensorFlow, TensorBoard, Flax, optax and jestimator cannot be imported;
# the loader is this repository's jax_artifact.py, loaded by its file path.
SERVE = textwrap.dedent('''
    import importlib.util, sys
    BLOCKED = ('tensorflow', 'tensorboard', 'flax', 'optax', 'jestimator')
    for name in BLOCKED:
      sys.modules[name] = None  # `import name` raises ModuleNotFoundError
    import numpy as np
    loader_path, artifact, inputs, outputs = sys.argv[1:]
    spec = importlib.util.spec_from_file_location('jax_artifact', loader_path)
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    predict = loader.load_jax(artifact)
    features = np.load(inputs)
    results = {}
    for n in (1, 37):
      for key, value in predict({'x': features['x'][:n]}).items():
        results[f'{n}/{key}'] = value
    np.savez(outputs, **results)
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED and sys.modules[m])
    assert not loaded, loaded
''')


def test_artifact_served_without_tensorflow_or_jestimator_matches_predict(trained, tmp_path):
  path = trained.export_jax(str(tmp_path / 'artifact'))
  assert path == str(tmp_path / 'artifact')
  assert sorted(os.listdir(path)) == ['predict.jax_export', 'signature.json', 'variables']
  np.savez(tmp_path / 'in.npz', x=X[:37])
  proc = subprocess.run([sys.executable, '-c', SERVE, jax_artifact.__file__, path,
                         str(tmp_path / 'in.npz'), str(tmp_path / 'out.npz')],
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  served = np.load(tmp_path / 'out.npz')
  for n in (1, 37):
    expected = _predict(trained, X[:n])
    assert sorted(expected) == ['class_ids', 'logits']
    np.testing.assert_allclose(served[f'{n}/logits'], expected['logits'], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(served[f'{n}/class_ids'], expected['class_ids'])
    assert served[f'{n}/logits'].shape == (n, 3)


def test_signature_json_names_inputs_outputs_platforms_and_checkpoint(trained, tmp_path):
  path = trained.export_jax(str(tmp_path / 'artifact'))
  with open(os.path.join(path, 'signature.json'), encoding='utf-8') as f:
    signature = json.load(f)
  assert signature['features'] == {'x': {'shape': [None, 8], 'dtype': 'float32'}}
  assert signature['predictions'] == {'class_ids': {'shape': [None], 'dtype': 'int32'},
                                      'logits': {'shape': [None, 3], 'dtype': 'float32'}}
  assert signature['platforms'] == ['cpu', 'cuda']
  assert signature['global_step'] == 4 and signature['checkpoint'] == trained.latest_checkpoint()
  assert signature['host_transforms'] == []


def test_an_older_checkpoint_exports_its_own_variables(trained, tmp_path):
  older = os.path.join(trained.model_dir, '2')
  predict = load_jax(trained.export_jax(str(tmp_path / 'artifact'), checkpoint_path=older))
  assert predict.signature['global_step'] == 2
  expected, newest = _predict(trained, X[:37], older), _predict(trained, X[:37])
  got = predict({'x': X[:37]})
  np.testing.assert_allclose(got['logits'], expected['logits'], atol=1e-5, rtol=0)
  assert np.abs(got['logits'] - newest['logits']).max() > 1e-3  # not the newest step's


class Doubling(je.HostTransform):
  """A host transform (TF ops, not in the artifact): x -> 2x."""

  def transform(self, features, labels, mode):
    return {'x': features['x'] * tf.constant(2.0)}, labels


def test_with_host_transforms_the_artifact_takes_transformed_features(tmp_path, caplog):
  est = _train(tmp_path / 'model', transforms=[Doubling()], max_steps=2)
  with caplog.at_level(logging.WARNING, logger='jestimator'):
    predict = load_jax(est.export_jax(str(tmp_path / 'artifact')))
  assert "host transforms ['Doubling']" in caplog.text
  assert predict.signature['host_transforms'] == ['Doubling']
  assert predict.signature['features_are'].startswith('transformed')
  np.testing.assert_allclose(predict({'x': 2 * X[:37]})['logits'],
                             _predict(est, X[:37])['logits'], atol=1e-5, rtol=0)


def test_a_feature_column_model_takes_its_columns_host_outputs(tmp_path):
  fc = je.feature_column
  color = fc.categorical_column_with_vocabulary_list('color', ['red', 'blue'])
  est = je.canned.LinearClassifier([color, fc.numeric_column('x')], model_dir=str(
      tmp_path / 'model'), config=je.RunConfig(save_summary_steps=None))
  raw = {'color': np.array([['red'], ['blue'], ['green']] * 16, dtype=object),
         'x': X[:48, :1]}
  est.train(je.inputs.numpy_input_fn(raw, Y[:48] % 2, batch_size=16, shuffle=False,
                                     num_epochs=None), max_steps=3)
  predict = load_jax(est.export_jax(str(tmp_path / 'artifact')))
  host = {k: tf.constant(v) for k, v in raw.items()}
  for transform in est._transforms:  # pylint: disable=protected-access
    host = transform.transform(host, None, 'infer')[0]
  assert sorted(predict.signature['features']) == sorted(host) == ['color/ids', 'x', 'x/value']
  expected = list(est.predict(je.inputs.numpy_input_fn(raw, batch_size=48, shuffle=False)))
  got = predict({k: v.numpy() for k, v in host.items()})
  np.testing.assert_allclose(got['logits'], np.stack([p['logits'] for p in expected]),
                             atol=1e-5, rtol=0)


def test_a_failed_export_leaves_no_directory_behind(trained, tmp_path, monkeypatch):
  def fail(path, variables):
    os.makedirs(path)
    with open(os.path.join(path, 'half'), 'w', encoding='utf-8') as f:
      f.write('half a variable')
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(jax_artifact, '_write_variables', fail)
  with pytest.raises(OSError, match='No space left'):
    trained.export_jax(str(tmp_path / 'exports' / 'artifact'))
  assert os.listdir(tmp_path / 'exports') == []  # no artifact, no temporary directory


def test_export_refuses_an_existing_artifact_and_a_model_without_checkpoint(trained, tmp_path):
  (tmp_path / 'taken').mkdir()
  (tmp_path / 'taken' / 'signature.json').write_text('{}')
  with pytest.raises(FileExistsError, match='already exists'):
    trained.export_jax(str(tmp_path / 'taken'))
  untrained = je.Estimator(mlp_model_fn, str(tmp_path / 'empty'), params=PARAMS)
  with pytest.raises(ValueError, match="Couldn't find trained model"):
    untrained.export_jax(str(tmp_path / 'artifact'))
  assert not os.path.exists(tmp_path / 'artifact')


@pytest.mark.parametrize('features, message', [
    ({'y': X[:3]}, "feature 'x' is missing"),
    ({'x': X[:3], 'id': np.arange(3)}, "unexpected feature 'id'"),
    ({'x': X[:3].astype(np.float64)}, r"feature 'x': expected shape \(batch, 8\) float32, "
                                      r'got \(batch, 8\) float64'),
    ({'x': X[:3, :5]}, r"feature 'x': expected shape \(batch, 8\) float32, got \(batch, 5\)"),
])
def test_the_loader_names_the_feature_that_does_not_fit(trained, tmp_path, features, message):
  predict = load_jax(trained.export_jax(str(tmp_path / 'artifact')))
  with pytest.raises(ValueError, match=message):
    predict(features)


def batch_size_as_number_model_fn(features, labels, mode):
  """Reads the batch size as a Python int: trains, but cannot be batch-polymorphic."""
  x = features['x'].reshape(int(features['x'].shape[0]), -1)
  logits = nn.Dense(3)(x)
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions={'logits': logits})
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return je.EstimatorSpec(mode, loss=loss, optimizer=optax.sgd(0.1))


def test_a_model_that_needs_a_concrete_batch_size_fails_clearly(tmp_path):
  est = _train(tmp_path / 'model', batch_size_as_number_model_fn, max_steps=1)
  with pytest.raises(ValueError, match='batch dimension symbolic'):
    est.export_jax(str(tmp_path / 'artifact'))
  assert not os.path.exists(tmp_path / 'artifact')


def bare_array_model_fn(features, labels, mode):
  """Features are one array, predictions one array."""
  logits = nn.Dense(3)(features)
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions=logits)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return je.EstimatorSpec(mode, loss=loss, optimizer=optax.sgd(0.1))


def test_a_model_of_bare_arrays_exports_bare_arrays(tmp_path):
  est = je.Estimator(bare_array_model_fn, str(tmp_path / 'model'))
  est.train(je.inputs.numpy_input_fn(X, Y, batch_size=32, shuffle=False), max_steps=2)
  predict = load_jax(est.export_jax(str(tmp_path / 'artifact')))
  assert predict.signature['features'] == {'features': {'shape': [None, 8], 'dtype': 'float32'}}
  assert predict.signature['predictions'] == {
      'predictions': {'shape': [None, 3], 'dtype': 'float32'}}
  expected = np.stack(list(est.predict(je.inputs.numpy_input_fn(X[:37], batch_size=16,
                                                                shuffle=False))))
  np.testing.assert_allclose(predict(X[:37]), expected, atol=1e-5, rtol=0)
  with pytest.raises(ValueError, match=r'features: expected shape \(batch, 8\) float32'):
    predict(X[:37, :4])
