"""Every head against the real tf.estimator (2.15) fixtures, number for number.

The fixtures (tests/fixtures/heads/*.json, tools/fixtures/README_heads.md)
hold tf.estimator's reduced and per-example losses, predictions, metrics, the
EVAL spec and `Estimator.evaluate` results for hand-chosen inputs. String
labels are replayed as their vocabulary positions (JAX has no strings) and
SparseTensor labels as padded ids through `multi_hot_from_ids`.
"""

import functools
import json
import pathlib

import jax
import numpy as np
import pytest

import jestimator as je
import jestimator.heads as heads
from conftest import one_device_mesh

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'heads'
RTOL = 1e-5
AUC_RTOL = 1e-4


@functools.cache
def load_cases() -> dict:
  cases = {}
  for path in sorted(FIXTURES.glob('*.json')):
    for case in json.loads(path.read_text())['cases']:
      cases[case['name']] = case
  return cases


def build_head(spec: dict):
  cls = getattr(heads, spec['class'])
  args = dict(spec['args'])
  if spec['class'] == 'MultiHead':
    args['heads'] = [build_head(h) for h in args['heads']]
  return cls(**args)


def replay_labels(spec: dict, head):
  """The fixture's labels as jestimator takes them: ids and multi-hot arrays."""
  if 'format' not in spec:  # MultiHead: one label spec per head.
    return {h.name: replay_labels(spec[h.name], h) for h in head.heads}
  values, strings = spec['values'], spec['dtype'] == 'string'
  vocab = getattr(head, '_vocabulary', None)
  if spec['format'] == 'dense':
    if strings:
      return vocab.ids_from_classes(values)
    return np.asarray(values, np.int32 if spec['dtype'] == 'int64' else np.float32)
  ids = np.full((len(values), max(len(r) for r in values)), -1, np.int32)
  for i, row in enumerate(values):
    if row:
      ids[i, :len(row)] = vocab.ids_from_classes(row) if strings else row
  return np.asarray(heads.multi_hot_from_ids(ids, head.n_classes))


def replay_inputs(case: dict):
  """(head, logits, labels, features) of a fixture case."""
  head = build_head(case['head'])
  inputs = case['inputs']
  as_f32 = lambda v: np.asarray(v, np.float32)
  logits = inputs['logits']
  logits = {k: as_f32(v) for k, v in logits.items()} if isinstance(logits, dict) else as_f32(logits)
  features = {k: as_f32(v) for k, v in inputs['features'].items()}
  return head, logits, replay_labels(inputs['labels'], head), features


def assert_close(actual, expected, key='', rtol=RTOL):
  rtol = AUC_RTOL if key.startswith('auc') else rtol
  np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64),
                             rtol=rtol, atol=1e-7, err_msg=key)


def assert_metrics(computed: dict, expected: dict):
  assert sorted(computed) == sorted(expected)
  for key, value in expected.items():
    assert_close(computed[key], value, key)


def sub_head(head, key: str):
  """The (sub-)head that produced prediction `key` (`name/key` in a MultiHead)."""
  if isinstance(head, heads.MultiHead):
    name, key = key.split('/', 1)
    return next(h for h in head.heads if h.name == name), key
  return head, key


ALL = sorted(load_cases())
SINGLE = [n for n in ALL if load_cases()[n]['head']['class'] != 'MultiHead']
MULTI = [n for n in ALL if load_cases()[n]['head']['class'] == 'MultiHead']


@pytest.mark.parametrize('name', ALL)
def test_reduced_loss(name):
  case = load_cases()[name]
  head, logits, labels, features = replay_inputs(case)
  assert_close(head.loss(labels, logits, features), case['expected']['loss'])


@pytest.mark.parametrize('name', SINGLE)
def test_per_example_loss_and_weights(name):
  case = load_cases()[name]
  expected = case['expected']
  head, logits, labels, features = replay_inputs(case)
  unweighted, weights = head.unweighted_loss_and_weights(labels, logits, features)
  assert_close(unweighted, expected['unweighted_loss'])
  weights = 1.0 if weights is None else weights
  assert_close(np.broadcast_to(weights, np.shape(expected['weights'])), expected['weights'])
  assert_close(np.asarray(unweighted) * np.asarray(weights), expected['weighted_loss'])


@pytest.mark.parametrize('name', [n for n in SINGLE if 'vocab' in n or 'sparse' in n])
def test_replayed_labels_are_tf_processed_labels(name):
  """Vocabulary position and sparse ids -> multi-hot agree with tf's label processing."""
  case = load_cases()[name]
  head, logits, labels, features = replay_inputs(case)
  np.testing.assert_array_equal(np.reshape(labels, np.shape(case['expected']['processed_labels'])),
                                case['expected']['processed_labels'])


@pytest.mark.parametrize('name', MULTI)
def test_multi_head_per_head_losses(name):
  case = load_cases()[name]
  head, logits, labels, features = replay_inputs(case)
  for sub in head.heads:
    expected = case['expected']['per_head'][sub.name]
    assert_close(sub.loss(labels[sub.name], logits[sub.name], features), expected['loss'])
    unweighted, _ = sub.unweighted_loss_and_weights(labels[sub.name], logits[sub.name], features)
    assert_close(unweighted, expected['unweighted_loss'])


@pytest.mark.parametrize('name', ALL)
def test_predictions(name):
  case = load_cases()[name]
  head, logits, _, _ = replay_inputs(case)
  predictions = head.predictions(logits)
  expected = case['expected']['predictions']
  assert sorted(predictions) == sorted(expected)
  for key, value in expected.items():
    owner, short_key = sub_head(head, key)
    if short_key in ('classes', 'all_classes'):
      names = owner.classes_from_ids(np.asarray(predictions[key]))
      assert np.vectorize(bytes.decode)(names).tolist() == value, key
    elif short_key.endswith('class_ids'):
      np.testing.assert_array_equal(predictions[key], value, err_msg=key)
    else:
      assert_close(predictions[key], value, key)


@pytest.mark.parametrize('name', ALL)
def test_metrics(name):
  case = load_cases()[name]
  head, logits, labels, features = replay_inputs(case)
  states = head.metrics(labels, logits, features)
  assert_metrics({k: m.compute() for k, m in states.items()}, case['expected']['metrics'])


@pytest.mark.parametrize('name', ALL)
def test_eval_spec_under_jit(name):
  case = load_cases()[name]
  head, logits, labels, features = replay_inputs(case)
  spec = jax.jit(lambda f, x, y: head.create_estimator_spec(f, je.ModeKeys.EVAL, x, y))(
      features, logits, labels)
  expected = case['expected']['eval_spec']
  assert_close(spec.loss, expected['loss'])
  assert_metrics({k: m.compute() for k, m in spec.eval_metrics.items()}, expected['metrics'])


# -- Estimator.evaluate: one batch, and batches of 2 with a padded last batch ----


def evaluate_inputs(case):
  """(features, labels) arrays for an input_fn; logits travel as features."""
  head, logits, labels, features = replay_inputs(case)
  features = dict(features)
  if isinstance(logits, dict):
    features.update({f'logits_{k}': v for k, v in logits.items()})
  else:
    features['logits'] = logits
  return head, features, labels


def head_model_fn(case):
  def model_fn(features, labels, mode):
    head = build_head(case['head'])
    if isinstance(head, heads.MultiHead):
      logits = {h.name: features[f'logits_{h.name}'] for h in head.heads}
    else:
      logits = features['logits']
    return head.create_estimator_spec(features, mode, logits, labels)
  return model_fn


EVALUATE = [(n, b) for n in ALL if 'evaluate' in load_cases()[n]['expected']
            for b in ('batch_size_5', 'batch_size_2')]


@pytest.mark.parametrize('name,batching', EVALUATE)
def test_estimator_evaluate_matches_tf_estimator(name, batching, model_dir):
  case = load_cases()[name]
  expected = dict(case['expected']['evaluate'][batching]['result'])
  batch_size = case['expected']['evaluate'][batching]['batch_sizes'][0]
  _, features, labels = evaluate_inputs(case)
  est = je.Estimator(head_model_fn(case), model_dir=model_dir,
                     config=je.RunConfig(mesh=one_device_mesh(), progress_bar=False))
  input_fn = je.inputs.numpy_input_fn(features, labels, batch_size=batch_size, shuffle=False)
  result = est.evaluate(input_fn)
  del expected['global_step'], result['global_step']
  assert_metrics(result, expected)


@pytest.mark.parametrize('name', [n for n, b in EVALUATE if b == 'batch_size_5'])
def test_evaluate_on_8_devices_pads_and_masks_the_last_batch(name, model_dir):
  """The 5 examples twice, batch 8 on 8 devices: batches of 8 and 2 (padded to 8).

  Every streaming metric equals tf's on the 5 examples (duplicating data keeps
  ratios); `loss` is the mean of the two batches' losses over real examples.
  """
  case = load_cases()[name]
  head, features, labels = evaluate_inputs(case)
  twice = lambda tree: jax.tree.map(lambda x: np.concatenate([x, x]), tree)
  features, labels = twice(features), twice(labels)
  est = je.Estimator(head_model_fn(case), model_dir=model_dir,
                     config=je.RunConfig(progress_bar=False))
  assert est.mesh.size == 8
  input_fn = je.inputs.numpy_input_fn(features, labels, batch_size=8, shuffle=False)
  result = est.evaluate(input_fn)
  logits = ({h.name: features[f'logits_{h.name}'] for h in head.heads}
            if isinstance(head, heads.MultiHead) else features['logits'])
  batch = lambda tree, s: jax.tree.map(lambda x: x[s], tree)
  batch_losses = [head.loss(batch(labels, s), batch(logits, s), batch(features, s))
                  for s in (slice(0, 8), slice(8, 10))]
  expected = dict(case['expected']['evaluate']['batch_size_5']['result'])
  expected['loss'] = np.mean(batch_losses)
  for key in [k for k in expected if k.startswith('loss/')]:
    sub = next(h for h in head.heads if h.name == key.split('/', 1)[1])
    expected[key] = np.mean([sub.loss(batch(labels, s)[sub.name], batch(logits, s)[sub.name])
                             for s in (slice(0, 8), slice(8, 10))])
  del expected['global_step'], result['global_step']
  assert_metrics(result, expected)
