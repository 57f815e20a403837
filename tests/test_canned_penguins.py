"""Canned classifiers on palmerpenguins against tf.estimator's (TF 2.15) reference runs.

tests/fixtures/feature_columns/canned_penguins*.json hold tf.estimator's
LinearClassifier and DNNClassifier trained with the same columns, data
order, batch size, steps and default optimizers. Initial weights and RNG
streams differ, so results agree within a margin, not exactly. Runs on one
device to keep the few thousand steps short.
"""

import numpy as np
import pytest
import tensorflow as tf

import jestimator as je
import jestimator.canned as canned
from conftest import one_device_mesh
from feature_column_specs import Builder, load, penguins

BATCH = 32


def train_input_fn(features, labels):
  return lambda: tf.data.Dataset.from_tensor_slices((features, labels)).shuffle(
      len(labels), seed=0, reshuffle_each_iteration=True).repeat().batch(BATCH)


def eval_input_fn(features, labels=None):
  data = features if labels is None else (features, labels)
  return lambda: tf.data.Dataset.from_tensor_slices(data).batch(BATCH)


def train_and_evaluate(kind, reference, model_dir, tmp_path):
  columns = [Builder(tmp_path)(s) for s in reference[kind]['columns']]
  assert sorted(c.name for c in columns) == reference[kind]['column_names_sorted']
  settings = reference[kind]['settings']
  config = je.RunConfig(seed=0, mesh=one_device_mesh(), progress_bar=False,
                        log_step_count_steps=None)
  common = dict(feature_columns=columns, n_classes=3, model_dir=model_dir, config=config,
                label_vocabulary=settings['label_vocabulary'])
  if kind == 'linear_classifier':
    est = canned.LinearClassifier(**common)
  else:
    est = canned.DNNClassifier(hidden_units=settings['hidden_units'], **common)
  data = penguins(reference)
  est.train(train_input_fn(*data['train']), max_steps=settings['steps'])
  return est, est.evaluate(eval_input_fn(*data['test'])), data


def test_linear_classifier_matches_tf_estimator(model_dir, tmp_path):
  reference = load('canned_penguins_300steps.json')
  est, metrics, data = train_and_evaluate('linear_classifier', reference, model_dir, tmp_path)
  want = reference['linear_classifier']['eval_test']
  assert metrics['global_step'] == want['global_step']
  assert metrics['accuracy'] >= want['accuracy'] - 0.03
  np.testing.assert_allclose(metrics['average_loss'], want['average_loss'], rtol=0.05)
  predictions = list(est.predict(eval_input_fn(data['test'][0])))
  ids = np.array([int(p['class_ids'][0]) for p in predictions])
  agree = np.mean(ids == reference['linear_classifier']['test_predicted_class_ids'])
  assert agree >= 0.97
  names = reference['data']['label_vocabulary']
  assert [p['classes'][0].decode() for p in predictions] == [names[i] for i in ids]


@pytest.mark.parametrize('kind', ['dnn_classifier'])
def test_dnn_classifier_reaches_tf_estimator_accuracy(kind, model_dir, tmp_path):
  # tf.estimator's DNNClassifier learns slowly (test average_loss 0.67 after 2000 steps);
  # plain Keras with the same legacy Adagrad(0.05) reaches train loss 0.006 in 300 steps,
  # as jestimator does. So the claim checked is the accuracy, not the loss.
  reference = load('canned_penguins.json')
  _, metrics, _ = train_and_evaluate(kind, reference, model_dir, tmp_path)
  want = reference[kind]['eval_test']
  assert metrics['global_step'] == want['global_step']
  assert metrics['accuracy'] >= want['accuracy'] - 0.03
