"""Train-time metrics in the log lines; a head's label vocabulary on the host."""

import logging
import re

import flax.linen as nn
import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je


def test_train_metrics_are_reported_with_the_loss(model_dir, caplog):
  def model_fn(features, labels, mode):
    pred = nn.Dense(1)(features['x'])[:, 0]
    return je.EstimatorSpec(mode, loss=((pred - labels) ** 2).mean(), predictions=pred,
                            optimizer=optax.sgd(0.01),
                            eval_metrics={'x_mean': je.metrics.Mean.from_model_output(
                                features['x'][:, 0])})

  batches = [({'x': np.full((8, 1), float(i), np.float32)}, np.zeros(8, np.float32))
             for i in range(10)]
  est = je.Estimator(model_fn, model_dir, je.RunConfig(log_step_count_steps=5))
  with caplog.at_level(logging.INFO, logger='jestimator'):
    est.train(lambda: batches, max_steps=10)
  logged = [float(v) for v in re.findall(r'x_mean = ([0-9.e+-]+)', caplog.text)]
  # each log covers the steps since the previous one: batches 0-4, then 5-9
  assert logged == [2.0, 7.0]


VOCAB = ['zebra', 'ant', 'moose']


def _string_input(labels, batch=8):
  x = np.eye(3, dtype=np.float32)[[VOCAB.index(l) if l in VOCAB else 0 for l in labels]]
  return lambda: tf.data.Dataset.from_tensor_slices(({'x': x}, labels)).batch(batch)


def _head_model_fn(head):
  def model_fn(features, labels, mode):
    logits = nn.Dense(3)(features['x'])
    return head.create_estimator_spec(features, mode, logits, labels, optax.adam(0.1))
  return model_fn


def test_string_labels_train_evaluate_and_predict_class_names(model_dir):
  head = je.heads.MultiClassHead(3, label_vocabulary=VOCAB)
  est = je.Estimator(_head_model_fn(head), model_dir,
                     input_transforms=je.heads.host_transforms(head))
  labels = np.array(VOCAB * 8)[:24]
  est.train(lambda: _string_input(labels)().repeat(), max_steps=60)
  assert est.evaluate(_string_input(labels))['accuracy'] == 1.0
  predictions = list(est.predict(_string_input(labels)))
  assert [p['classes'] for p in predictions[:3]] == [b'zebra', b'ant', b'moose']
  assert predictions[1]['class_ids'] == 1


def test_unknown_string_label_is_named(model_dir):
  head = je.heads.MultiClassHead(3, label_vocabulary=VOCAB)
  est = je.Estimator(_head_model_fn(head), model_dir,
                     input_transforms=je.heads.host_transforms(head))
  labels = np.array(['ant'] * 7 + ['giraffe'])
  with pytest.raises(ValueError, match="label not in label_vocabulary.*giraffe"):
    est.train(_string_input(labels), max_steps=2)


def test_multi_label_string_lists_become_multi_hot():
  head = je.heads.MultiLabelHead(3, label_vocabulary=VOCAB)
  (lookup,) = je.heads.host_transforms(head)
  labels = tf.constant([['ant', 'moose'], ['zebra', ''], ['', '']])
  _, hot = lookup.transform({}, labels, je.ModeKeys.TRAIN)
  np.testing.assert_array_equal(hot.numpy(), [[0, 1, 1], [1, 0, 0], [0, 0, 0]])
  with pytest.raises(tf.errors.InvalidArgumentError, match='lion'):
    lookup.transform({}, tf.constant([['lion', '']]), je.ModeKeys.TRAIN)
