"""Heads inside model_fns: training, prediction, the padding mask, MultiHead logits."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jestimator as je
import jestimator.heads as heads
from jestimator.example_mask import mask_scope


def three_class_data(n=64, seed=0):
  rng = np.random.RandomState(seed)
  x = rng.randn(n, 4).astype(np.float32)
  y = np.argmax(x[:, :3], axis=1).astype(np.int32)
  return x, y


def head_model_fn(features, labels, mode):
  logits = nn.Dense(3)(features['x'])
  head = heads.MultiClassHead(3, label_vocabulary=['a', 'b', 'c'])
  return head.create_estimator_spec(features, mode, logits, labels, optimizer=optax.adam(0.1))


def test_train_evaluate_predict_with_a_head(model_dir):
  x, y = three_class_data()
  est = je.Estimator(head_model_fn, model_dir=model_dir, config=je.RunConfig(progress_bar=False))
  before = est.evaluate(je.inputs.numpy_input_fn({'x': x}, y, batch_size=32, shuffle=False))
  est.train(je.inputs.numpy_input_fn({'x': x}, y, batch_size=32, shuffle=False, num_epochs=None),
            steps=30)
  after = est.evaluate(je.inputs.numpy_input_fn({'x': x}, y, batch_size=32, shuffle=False))
  assert sorted(after) == ['accuracy', 'average_loss', 'global_step', 'loss']
  assert after['average_loss'] < before['average_loss'] and after['accuracy'] > 0.8
  predictions = list(est.predict(je.inputs.numpy_input_fn({'x': x[:8]}, shuffle=False)))
  assert sorted(predictions[0]) == ['all_class_ids', 'all_classes', 'class_ids', 'classes',
                                    'logits', 'probabilities']
  ids = np.stack([p['classes'] for p in predictions])
  names = heads.MultiClassHead(3, label_vocabulary=['a', 'b', 'c']).classes_from_ids(ids)
  assert names.shape == (8, 1) and set(names.ravel()) <= {b'a', b'b', b'c'}


@pytest.mark.parametrize('reduction', [heads.Reduction.SUM_OVER_BATCH_SIZE, heads.Reduction.SUM])
@pytest.mark.parametrize('label_dimension', [1, 2])
def test_padded_examples_do_not_count_in_the_loss(reduction, label_dimension):
  rng = np.random.RandomState(0)
  logits = rng.randn(6, label_dimension).astype(np.float32)
  labels = rng.randn(6, label_dimension).astype(np.float32)
  features = {'w': rng.rand(6, 1).astype(np.float32)}
  head = heads.RegressionHead(label_dimension, weight_column='w', loss_reduction=reduction)
  real = head.loss(labels[:4], logits[:4], {'w': features['w'][:4]})

  @jax.jit
  def padded(labels, logits, features, mask):
    with mask_scope(mask):
      return head.loss(labels, logits, features)

  mask = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
  np.testing.assert_allclose(padded(labels, logits, features, mask), real, rtol=1e-6)


def test_multi_head_takes_one_logits_array_split_in_head_order():
  head = heads.MultiHead([heads.MultiClassHead(3, name='a'), heads.RegressionHead(name='b')],
                         head_weights=[1.0, 0.5])
  rng = np.random.RandomState(0)
  logits = rng.randn(4, 4).astype(np.float32)
  labels = {'a': np.array([0, 1, 2, 0], np.int32), 'b': rng.randn(4, 1).astype(np.float32)}
  as_dict = {'a': logits[:, :3], 'b': logits[:, 3:]}
  np.testing.assert_allclose(head.loss(labels, logits), head.loss(labels, as_dict))
  a, b = head.predictions(logits), head.predictions(as_dict)
  assert sorted(a) == sorted(b) and 'a/probabilities' in a and 'b/predictions' in a
  for key in a:
    np.testing.assert_allclose(a[key], b[key])
  assert list(head.predictions(logits, keys=['b/predictions'])) == ['b/predictions']
  assert head.logits_dimension == 4


def test_regularization_losses_add_to_the_loss_and_are_reported():
  head = heads.RegressionHead(name='r')
  labels, logits = np.array([[1.0], [2.0]], np.float32), np.array([[1.5], [2.0]], np.float32)
  spec = head.create_estimator_spec({}, je.ModeKeys.EVAL, logits, labels,
                                    regularization_losses=[jnp.float32(0.25), 0.5])
  np.testing.assert_allclose(spec.loss, 0.125 + 0.75)
  np.testing.assert_allclose(spec.eval_metrics['regularization_loss/r'].compute(), 0.75)
  np.testing.assert_allclose(spec.eval_metrics['average_loss/r'].compute(), 0.125)


def test_predict_spec_holds_predictions_only():
  spec = heads.BinaryClassHead().create_estimator_spec({}, je.ModeKeys.PREDICT,
                                                       np.array([[0.3]], np.float32))
  assert spec.loss is None and spec.eval_metrics == {}
  assert sorted(spec.predictions) == ['all_class_ids', 'all_classes', 'class_ids', 'classes',
                                      'logistic', 'logits', 'probabilities']
