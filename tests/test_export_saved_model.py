"""SavedModel export: what TF Serving gets equals what `Estimator.predict` yields.

Models: a custom model_fn (no export_outputs: one predict signature), canned estimators
(linear, DNN, wide & deep with string feature columns -- one from a vocabulary file -- and a
label vocabulary; a regressor) and a MultiHead model. Each is exported, then loaded by
`serving_client.py` in a subprocess where jax, flax, optax, orbax and jestimator cannot be
imported; every signature is called on 1 and 37 raw examples (serialized tf.Examples for the
parsing receivers) and compared with `predict` on the same examples. All requests go to one
subprocess (the `served` fixture), so TensorFlow starts once.
"""

import os
import re
import pickle
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import jestimator as je
import jestimator.canned as canned
import jestimator.export as jex
import jestimator.feature_column as fc
from jestimator.export import saved_model
from conftest import one_device_mesh

CONFIG = je.RunConfig(seed=0, mesh=one_device_mesh(), progress_bar=False,
                      log_step_count_steps=None)
N = 37  # the larger serving batch; the smaller is 1
CLIENT = os.path.join(os.path.dirname(__file__), 'serving_client.py')
COLOR = fc.categorical_column_with_vocabulary_list('color', ['red', 'green', 'blue'])
X = fc.numeric_column('x')
SPECIES = ['adelie', 'gentoo', 'chinstrap']
CLASSIFY, REGRESS, PREDICT = ('tensorflow/serving/classify', 'tensorflow/serving/regress',
                              'tensorflow/serving/predict')
CLASSIFY_IO = (CLASSIFY, ['inputs'], ['classes', 'scores'])
REGRESS_IO = (REGRESS, ['inputs'], ['outputs'])


def table(n: int, seed: int) -> dict:
  """Raw features as an input_fn gives them: strings and floats `[n, 1]`."""
  rng = np.random.RandomState(seed)
  return {'color': rng.choice(['red', 'green', 'blue'], (n, 1)).astype(object),
          'shape': rng.choice(['circle', 'square'], (n, 1)).astype(object),
          'x': rng.randn(n, 1).astype(np.float32), 'w': np.ones((n, 1), np.float32)}


def serialized(features: dict) -> np.ndarray:
  """The same examples as serialized tf.Examples (the weight column left out)."""
  def one(i):
    feature = {
        'color': tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[features['color'][i, 0].encode()])),
        'shape': tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[features['shape'][i, 0].encode()])),
        'x': tf.train.Feature(float_list=tf.train.FloatList(value=[features['x'][i, 0]]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
  return np.array([one(i) for i in range(len(features['x']))], dtype=object)


def dataset_fn(features, labels=None, repeat=False, batch=16):
  def input_fn():
    ds = tf.data.Dataset.from_tensor_slices(features if labels is None else (features, labels))
    return (ds.repeat() if repeat else ds).batch(batch)
  return input_fn


def predicted(est, input_fn) -> dict:
  """`predict`'s outputs over the input, as arrays `[examples, ...]`."""
  batches = list(est.predict(input_fn, yield_single_examples=False))
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


# -- the models -------------------------------------------------------------------------------

def custom_model_fn(features, labels, mode):
  """Logits from floats 'x' [b, 3] and int64 ids 'k' [b, 1]; no export_outputs."""
  je.check(features['k'] >= 0, 'k must be >= 0, got {k}', k=features['k'])
  logits = nn.Dense(3)(features['x']) + nn.Embed(5, 3)(features['k'][:, 0])
  predictions = {'probabilities': jax.nn.softmax(logits), 'top': logits.argmax(-1)}
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions=predictions)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return je.EstimatorSpec(mode, loss=loss, optimizer=optax.adam(0.1), predictions=predictions)


def custom_features(n, seed):
  rng = np.random.RandomState(seed)
  return {'x': rng.randn(n, 3).astype(np.float32), 'k': rng.randint(0, 5, (n, 1))}


def train_custom(model_dir):
  features = custom_features(64, 0)
  est = je.Estimator(custom_model_fn, model_dir=model_dir,
                     config=je.RunConfig(seed=0, progress_bar=False, log_step_count_steps=None))
  labels = (features['x'][:, 0] > 0).astype(np.int32) + (features['k'][:, 0] > 2)
  est.train(lambda: (features, labels), steps=5)
  return est


def classes_of(features) -> np.ndarray:
  return np.where(features['color'] == 'red', 'yes', 'no').astype(object)


def train_canned(kind, model_dir, vocabulary_file):
  shape = fc.categorical_column_with_vocabulary_file('shape', vocabulary_file)
  if kind == 'linear':
    est = canned.LinearClassifier([COLOR, shape, X], label_vocabulary=['no', 'yes'],
                                  config=CONFIG, model_dir=model_dir)
  elif kind == 'dnn':  # three classes, no vocabulary: names b'0', b'1', b'2'
    est = canned.DNNClassifier([4], [fc.indicator_column(COLOR), X], n_classes=3,
                               config=CONFIG, model_dir=model_dir)
  elif kind == 'wide_deep':
    est = canned.DNNLinearCombinedClassifier(
        linear_feature_columns=[COLOR, shape], dnn_feature_columns=[X, fc.embedding_column(
            COLOR, 2)], dnn_hidden_units=[4], dnn_optimizer=optax.adam(0.05),
        label_vocabulary=['no', 'yes'], weight_column='w', config=CONFIG, model_dir=model_dir)
  elif kind == 'baseline':
    est = canned.BaselineClassifier(label_vocabulary=['no', 'yes'], config=CONFIG,
                                    model_dir=model_dir)
  elif kind == 'baseline_regressor':
    est = canned.BaselineRegressor(config=CONFIG, model_dir=model_dir)
  elif kind == 'dnn_regressor':
    est = canned.DNNRegressor([4], [fc.indicator_column(COLOR), X], config=CONFIG,
                              model_dir=model_dir)
  elif kind == 'wide_deep_regressor':
    est = canned.DNNLinearCombinedRegressor(
        linear_feature_columns=[COLOR, shape], dnn_feature_columns=[X], dnn_hidden_units=[4],
        config=CONFIG, model_dir=model_dir)
  else:
    est = canned.LinearRegressor([COLOR, shape, X], config=CONFIG, model_dir=model_dir)
  features = table(64, 1)
  regression = 2.0 * features['x'] + (features['color'] == 'red')
  labels = {'dnn': (features['color'] == 'red').astype(np.int32) + (features['x'] > 0),
            'regressor': regression, 'baseline_regressor': regression,
            'dnn_regressor': regression, 'wide_deep_regressor': regression}.get(
                kind, classes_of(features))
  est.train(dataset_fn(features, labels, repeat=True), steps=5)
  return est


MULTI_HEAD = je.heads.MultiHead([
    je.heads.MultiClassHead(3, label_vocabulary=SPECIES, name='species'),
    je.heads.RegressionHead(name='mass')])
MULTI_COLUMNS = [fc.indicator_column(COLOR), X]


def multi_head_model_fn(features, labels, mode):
  net = fc.DenseFeatures(MULTI_COLUMNS)(features)
  logits = nn.Dense(MULTI_HEAD.logits_dimension)(nn.relu(nn.Dense(8)(net)))
  return MULTI_HEAD.create_estimator_spec(features, mode, logits, labels,
                                          optimizer=optax.adam(0.05))


def train_multi_head(model_dir):
  est = je.Estimator(multi_head_model_fn, model_dir=model_dir, config=CONFIG,
                     feature_columns=MULTI_COLUMNS,
                     input_transforms=je.heads.host_transforms(MULTI_HEAD))
  features = table(64, 2)
  species = np.array(SPECIES, dtype=object)[(features['color'] == 'red').astype(int) +
                                            (features['x'] > 1)]
  labels = {'species': species, 'mass': 3.0 + features['x']}
  est.train(dataset_fn({k: features[k] for k in ('color', 'x')}, labels, repeat=True), steps=5)
  return est


# -- what each signature should serve ---------------------------------------------------------

def classify(p, prefix=''):
  return {'classes': p[prefix + 'all_classes'], 'scores': p[prefix + 'probabilities']}


def per_head(p, head):
  return {k[len(head) + 1:]: v for k, v in p.items() if k.startswith(head + '/')}


EXPECTED = {  # model -> {signature: (method, inputs, outputs from predict's outputs)}
    'custom': {'serving_default': (PREDICT, ['k', 'x'], lambda p: p)},
    'linear': {'serving_default': (CLASSIFY, ['inputs'], classify),
               'classification': (CLASSIFY, ['inputs'], classify),
               'regression': (REGRESS, ['inputs'], lambda p: {'outputs': p['logistic']}),
               'predict': (PREDICT, ['examples'], lambda p: p)},
    'dnn': {'serving_default': (CLASSIFY, ['inputs'], classify),
            'classification': (CLASSIFY, ['inputs'], classify),
            'predict': (PREDICT, ['examples'], lambda p: p)},
    'regressor': {'serving_default': (REGRESS, ['inputs'],
                                      lambda p: {'outputs': p['predictions']}),
                  'regression': (REGRESS, ['inputs'], lambda p: {'outputs': p['predictions']}),
                  'predict': (PREDICT, ['examples'], lambda p: p)},
    'multi_head': {
        'serving_default': (CLASSIFY, ['inputs'], lambda p: classify(p, 'species/')),
        'species': (CLASSIFY, ['inputs'], lambda p: classify(p, 'species/')),
        'species/classification': (CLASSIFY, ['inputs'], lambda p: classify(p, 'species/')),
        'species/predict': (PREDICT, ['examples'], lambda p: per_head(p, 'species')),
        'mass': (REGRESS, ['inputs'], lambda p: {'outputs': p['mass/predictions']}),
        'mass/regression': (REGRESS, ['inputs'], lambda p: {'outputs': p['mass/predictions']}),
        'mass/predict': (PREDICT, ['examples'], lambda p: per_head(p, 'mass')),
        'predict': (PREDICT, ['examples'], lambda p: p)},
}
EXPECTED['wide_deep'] = EXPECTED['baseline'] = EXPECTED['linear']
for _kind in ('baseline_regressor', 'dnn_regressor', 'wide_deep_regressor'):
  EXPECTED[_kind] = EXPECTED['regressor']
# Raw tensors in: classify/regress need serialized tf.Examples, so only the predict signatures.
EXPECTED['multi_head_raw'] = {key: (method, ['color', 'x'], out) for key, (method, _, out)
                              in EXPECTED['multi_head'].items() if method == PREDICT}
CASES = [(model, key, n) for model in sorted(EXPECTED) for key in sorted(EXPECTED[model])
         for n in (1, N)]


@pytest.fixture(scope='module')
def served(tmp_path_factory):
  """Trains and exports every model, and serves every request in one TF-only subprocess."""
  root = tmp_path_factory.mktemp('export')
  vocabulary = root / 'shapes.txt'
  vocabulary.write_text('circle\nsquare\n')
  exports, predictions, requests = {}, {}, []
  raw = table(N, 3)
  examples = serialized(raw)
  spec = fc.make_parse_example_spec([COLOR, fc.categorical_column_with_vocabulary_file(
      'shape', str(vocabulary)), X])
  parsing = jex.build_parsing_serving_input_receiver_fn(spec)

  est = train_custom(str(root / 'custom'))
  inputs = custom_features(N, 4)
  exports['custom'] = est.export_saved_model(
      str(root / 'exports'), jex.build_raw_serving_input_receiver_fn(custom_features(1, 0)))
  predictions['custom'] = predicted(est, lambda: inputs)
  for kind in ('dnn', 'linear', 'regressor', 'wide_deep', 'baseline', 'baseline_regressor',
               'dnn_regressor', 'wide_deep_regressor'):  # every canned estimator
    est = train_canned(kind, str(root / kind), str(vocabulary))
    exports[kind] = est.export_saved_model(str(root / 'exports'), parsing)
    predictions[kind] = predicted(est, dataset_fn(raw, batch=N))
  est = train_multi_head(str(root / 'multi_head'))
  exports['multi_head'] = est.export_saved_model(str(root / 'exports'), parsing)
  exports['multi_head_raw'] = est.export_saved_model(
      str(root / 'exports'), jex.build_raw_serving_input_receiver_fn(
          {'color': np.array([['red']], dtype=object), 'x': np.zeros((1, 1), np.float32)}))
  predictions['multi_head'] = predictions['multi_head_raw'] = predicted(
      est, dataset_fn({k: raw[k] for k in ('color', 'x')}, batch=N))
  vocabulary.unlink()  # the SavedModel must carry its own copy (an asset)

  for model, key, n in CASES:
    method, names, _ = EXPECTED[model][key]
    if model == 'custom':
      feed = {k: v[:n] for k, v in inputs.items()}
    elif model == 'multi_head_raw':
      feed = {k: raw[k][:n] for k in ('color', 'x')}
    else:
      feed = {names[0]: examples[:n]}
    requests.append((exports[model], key, feed))
  bad_k = {'x': inputs['x'][:2], 'k': np.array([[1], [-3]])}  # fails the model's je.check
  requests.append((exports['custom'], 'serving_default', bad_k))
  request_file, result_file = root / 'requests.pkl', root / 'results.pkl'
  request_file.write_bytes(pickle.dumps(requests))
  run = subprocess.run([sys.executable, CLIENT, str(request_file), str(result_file)],
                       capture_output=True, text=True, timeout=600, check=False)
  assert run.returncode == 0, run.stderr[-4000:]
  results = pickle.loads(result_file.read_bytes())
  answers = dict(zip([(m, k, n) for m, k, n in CASES] + ['bad_k'], results['answers']))
  return {'exports': exports, 'predictions': predictions, 'answers': answers,
          'written': results['written'], 'loaded': results['loaded'],
          'imported': results['imported'], 'base': str(root / 'exports')}


def test_serving_needs_tensorflow_only(served):
  assert served['imported'] == []


@pytest.mark.parametrize('model', sorted(EXPECTED))
def test_signatures_are_written_as_tf_estimator_wrote_them(served, model):
  export_dir = served['exports'][model]
  written = served['written'][export_dir]
  want = {key: (method, names, sorted(out(served['predictions'][model])))
          for key, (method, names, out) in EXPECTED[model].items()}
  assert written == want
  assert served['loaded'][export_dir] == sorted(want)


@pytest.mark.parametrize('model,key,n', CASES)
def test_served_outputs_equal_predict(served, model, key, n):
  answer = served['answers'][(model, key, n)]
  assert isinstance(answer, dict), answer
  expected = EXPECTED[model][key][2](served['predictions'][model])
  assert sorted(answer) == sorted(expected)
  for name, value in expected.items():
    value = np.asarray(value)[:n]
    assert answer[name].shape == value.shape, name
    if value.dtype.kind in 'fc':
      np.testing.assert_allclose(answer[name], value, atol=1e-5, rtol=0, err_msg=name)
    else:
      np.testing.assert_array_equal(answer[name], value, err_msg=name)


def test_class_names_come_from_the_label_vocabulary(served):
  answer = served['answers'][('wide_deep', 'serving_default', N)]
  assert answer['classes'].tolist() == [[b'no', b'yes']] * N
  assert set(served['answers'][('multi_head', 'predict', N)]['species/classes'][:, 0]) <= {
      s.encode() for s in SPECIES}
  assert served['answers'][('dnn', 'classification', 1)]['classes'].tolist() == [
      [b'0', b'1', b'2']]


def test_a_failed_device_check_fails_the_request(served):
  assert 'jestimator.check failed in the served model' in served['answers']['bad_k']


def test_exports_are_timestamped_directories_of_the_base(served):
  names = sorted(os.listdir(served['base']))
  assert len(names) == len(EXPECTED) and all(name.isdigit() for name in names)
  assert sorted(os.path.dirname(p) for p in served['exports'].values()) == [
      served['base']] * len(EXPECTED)
  wide_deep = served['exports']['wide_deep']
  assert os.listdir(os.path.join(wide_deep, 'assets')) == ['shapes.txt']


@pytest.fixture(scope='module')
def custom(tmp_path_factory):
  return train_custom(str(tmp_path_factory.mktemp('custom')))


def test_as_text_and_assets_extra(custom, tmp_path):
  extra = tmp_path / 'notes.txt'
  extra.write_text('trained on x and k')
  path = custom.export_saved_model(
      str(tmp_path / 'base'), jex.build_raw_serving_input_receiver_fn(custom_features(1, 0)),
      assets_extra={'docs/notes.txt': str(extra)}, as_text=True)
  assert sorted(os.listdir(path)) == ['assets.extra', 'saved_model.pbtxt', 'variables']
  with open(os.path.join(path, 'assets.extra', 'docs', 'notes.txt')) as f:
    assert f.read() == 'trained on x and k'
  again = custom.export_saved_model(
      str(tmp_path / 'base'), jex.build_raw_serving_input_receiver_fn(custom_features(1, 0)))
  assert int(os.path.basename(again)) > int(os.path.basename(path))


def test_a_failed_export_leaves_nothing_behind(custom, tmp_path):
  base = tmp_path / 'base'
  with pytest.raises(FileNotFoundError):
    custom.export_saved_model(
        str(base), jex.build_raw_serving_input_receiver_fn(custom_features(1, 0)),
        assets_extra={'notes.txt': str(tmp_path / 'missing.txt')})
  assert os.listdir(base) == []


@pytest.fixture
def no_conversion(monkeypatch):
  """Fails the test if the export reaches jax2tf."""
  def convert(*args, **kwargs):
    raise AssertionError('reached jax2tf.convert')
  monkeypatch.setattr(saved_model.jax2tf, 'convert', convert)


def test_a_missing_model_feature_is_named_before_conversion(custom, tmp_path, no_conversion):
  receiver = jex.build_raw_serving_input_receiver_fn({'x': np.zeros((1, 3), np.float32)})
  with pytest.raises(ValueError, match="features miss 'k', which the model was trained with"):
    custom.export_saved_model(str(tmp_path / 'base'), receiver)
  assert os.listdir(tmp_path / 'base') == []


def test_a_missing_raw_feature_of_a_column_is_named_before_conversion(tmp_path, no_conversion):
  est = je.Estimator(multi_head_model_fn, model_dir=str(tmp_path / 'model'), config=CONFIG,
                     feature_columns=MULTI_COLUMNS)
  est.train(dataset_fn({'x': table(8, 0)['x'], 'color': table(8, 0)['color']},
                       {'species': np.zeros((8, 1), np.int32),
                        'mass': np.zeros((8, 1), np.float32)}, repeat=True), steps=1)
  receiver = jex.build_parsing_serving_input_receiver_fn(fc.make_parse_example_spec([X]))
  with pytest.raises(ValueError, match="feature 'color' is not in the input features"):
    est.export_saved_model(str(tmp_path / 'base'), receiver)


def test_a_reshaped_feature_is_named(custom, tmp_path, no_conversion):
  receiver = jex.build_raw_serving_input_receiver_fn(
      {'x': np.zeros((1, 2), np.float32), 'k': np.zeros((1, 1), np.int64)})
  with pytest.raises(ValueError, match=r"feature 'x' has shape \(batch, 2\) in the serving "
                                       r'graph but the model was trained with shape \(batch, 3\)'):
    custom.export_saved_model(str(tmp_path / 'base'), receiver)


def test_no_checkpoint_no_export(tmp_path):
  est = je.Estimator(custom_model_fn, model_dir=str(tmp_path / 'empty'), config=CONFIG)
  with pytest.raises(ValueError, match="Couldn't find trained model"):
    est.export_saved_model(str(tmp_path / 'base'),
                           jex.build_raw_serving_input_receiver_fn(custom_features(1, 0)))


def test_multi_head_export_outputs_follow_tf_estimator():
  logits = np.zeros((2, 4), np.float32)
  predictions = MULTI_HEAD.predictions(logits)
  outputs = MULTI_HEAD.export_outputs(predictions)
  assert sorted(outputs) == ['mass', 'mass/predict', 'mass/regression', 'predict',
                             'serving_default', 'species', 'species/classification',
                             'species/predict']
  assert outputs['serving_default'] is outputs['species']
  assert isinstance(outputs['mass'], jex.RegressionOutput)
  assert sorted(outputs['predict'].outputs) == sorted(predictions)
  assert outputs['species'].class_names == tuple(s.encode() for s in SPECIES)


def test_export_outputs_reject_what_tf_rejected():
  with pytest.raises(ValueError, match='at least one of scores and classes'):
    jex.ClassificationOutput()
  with pytest.raises(ValueError, match='classes must be integer class ids'):
    jex.ClassificationOutput(classes=np.zeros((2, 3), np.float32))
  with pytest.raises(ValueError, match='value must be a floating point array'):
    jex.RegressionOutput(np.zeros((2, 1), np.int32))


def test_a_platform_that_cannot_lower_falls_back_to_cpu(custom, tmp_path, monkeypatch, caplog):
  convert = saved_model.jax2tf.convert

  def cuda_fails(fn, **kwargs):
    if 'cuda' in kwargs['native_serialization_platforms']:
      raise NotImplementedError('no CUDA lowering for this model')
    return convert(fn, **kwargs)

  monkeypatch.setattr(saved_model.jax2tf, 'convert', cuda_fails)
  path = custom.export_saved_model(
      str(tmp_path / 'base'), jex.build_raw_serving_input_receiver_fn(custom_features(1, 0)))
  model = saved_model_pb2.SavedModel()
  with open(os.path.join(path, 'saved_model.pb'), 'rb') as f:
    model.ParseFromString(f.read())
  calls = [n for n in model.meta_graphs[0].graph_def.node if n.op == 'XlaCallModule']
  assert [list(n.attr['platforms'].list.s) for n in calls] == [[b'CPU']]
  assert 'exporting for CPU only' in caplog.text


def test_saved_model_cli_lists_the_signatures(served):
  cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
  run = subprocess.run([cli, 'show', '--dir', served['exports']['wide_deep'], '--all'],
                       capture_output=True, text=True, timeout=300, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  shown = re.findall(r"signature_def\['([^']+)'\]:.*?Method name is: (\S+)", run.stdout, re.S)
  assert dict(shown) == {'classification': 'tensorflow/serving/classify',
                         'predict': 'tensorflow/serving/predict',
                         'regression': 'tensorflow/serving/regress',
                         'serving_default': 'tensorflow/serving/classify'}
