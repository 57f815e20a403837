"""Heads reject bad configuration and bad input with messages that say what is wrong."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jestimator as je
import jestimator.heads as heads

LOGITS3 = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]], np.float32)
LOGITS1 = np.array([[0.5], [-1.0]], np.float32)


@pytest.mark.parametrize('make,match', [
    (lambda: heads.MultiClassHead(n_classes=2), 'n_classes must be > 2'),
    (lambda: heads.MultiLabelHead(n_classes=1), 'n_classes must be > 1'),
    (lambda: heads.BinaryClassHead(thresholds=[0.5, 1.0]), r'thresholds not in \(0, 1\)'),
    (lambda: heads.BinaryClassHead(loss_reduction='none'), 'Invalid loss_reduction'),
    (lambda: heads.BinaryClassHead(label_vocabulary=['a', 'b', 'c']), 'has 3 entries'),
    (lambda: heads.MultiClassHead(3, label_vocabulary=['a', 'b', 'a']), 'duplicates'),
    (lambda: heads.MultiClassHead(3, label_vocabulary='abc'), 'list or a tuple'),
    (lambda: heads.RegressionHead(label_dimension=0), 'label_dimension'),
    (lambda: heads.RegressionHead(loss_fn=lambda labels: labels), 'must contain argument: logits'),
    (lambda: heads.RegressionHead(loss_fn=lambda labels, logits, x: x), 'unexpected args'),
    (lambda: heads.MultiLabelHead(3, classes_for_class_based_metrics=[3]), r'range \[0, 2\]'),
    (lambda: heads.MultiLabelHead(3, classes_for_class_based_metrics=['x']),
     'label_vocabulary must be provided'),
    (lambda: heads.MultiHead([heads.RegressionHead()]), 'must have a name'),
    (lambda: heads.MultiHead([heads.RegressionHead(name='a'), heads.RegressionHead(name='a')]),
     'unique'),
    (lambda: heads.MultiHead([heads.RegressionHead(name='a')], head_weights=[1.0, 2.0]),
     'same size'),
])
def test_bad_configuration_is_a_value_error(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_labels_of_the_wrong_shape_name_both_shapes():
  with pytest.raises(ValueError, match=r'\(2, 1\).*got \(2, 3\)'):
    heads.MultiClassHead(3).loss(np.zeros((2, 3), np.int32), LOGITS3)
  with pytest.raises(ValueError, match='multi_hot_from_ids'):
    heads.MultiLabelHead(3).loss(np.zeros((2, 2), np.int32), LOGITS3)
  with pytest.raises(ValueError, match=r'logits shape must be \[D0, D1, ... DN, 1\]'):
    heads.BinaryClassHead().loss(np.zeros((2, 1)), LOGITS3)


def test_rank_one_labels_are_accepted_for_single_label_heads():
  a = heads.MultiClassHead(3).loss(np.array([0, 2]), LOGITS3)
  b = heads.MultiClassHead(3).loss(np.array([[0], [2]]), LOGITS3)
  np.testing.assert_allclose(a, b)


@pytest.mark.parametrize('head,labels,logits,match', [
    (heads.MultiClassHead(3), np.array([[0], [3]], np.int32), LOGITS3, r'invalid label 3'),
    (heads.MultiClassHead(3), np.array([[-1], [0]], np.int32), LOGITS3, r'invalid label -1'),
    (heads.BinaryClassHead(), np.array([[0], [2]], np.int32), LOGITS1, r'invalid label 2.0'),
    (heads.MultiLabelHead(3), np.array([[0, 2, 1], [0, 0, 0]]), LOGITS3, 'multi-hot'),
    (heads.PoissonRegressionHead(), np.array([[1.0], [-2.0]], np.float32), LOGITS1, 'counts'),
    (heads.LogisticRegressionHead(), np.array([[1.5], [0.0]], np.float32), LOGITS1, r'\[0, 1\]'),
])
def test_concrete_labels_out_of_range_raise(head, labels, logits, match):
  with pytest.raises(ValueError, match=match):
    head.loss(labels, logits)


def test_traced_labels_out_of_range_make_the_loss_nan():
  """Under jit nothing can raise; the NaN loss trips training's NaN guard instead."""
  head = heads.MultiClassHead(3)
  loss = jax.jit(head.loss)(jnp.array([[0], [3]]), LOGITS3)
  assert np.isnan(loss)
  assert np.isfinite(jax.jit(head.loss)(jnp.array([[0], [2]]), LOGITS3))
  hot = jax.jit(heads.multi_hot_from_ids, static_argnums=1)(jnp.array([[0, 5], [1, -1]]), 3)
  assert np.isnan(jax.jit(heads.MultiLabelHead(3).loss)(hot, LOGITS3))


def test_class_ids_must_be_integers():
  with pytest.raises(ValueError, match='integer class ids'):
    heads.MultiClassHead(3).loss(np.array([[0.0], [1.0]], np.float32), LOGITS3)
  with pytest.raises(ValueError, match='integer class ids'):
    heads.BinaryClassHead(label_vocabulary=['n', 'p']).loss(np.array([[0.5], [1.0]]), LOGITS1)


def test_weight_column_missing_or_misshapen():
  head = heads.BinaryClassHead(weight_column='w')
  labels = np.array([[0], [1]])
  with pytest.raises(ValueError, match=r"weight_column 'w' is not in features.*\['x'\]"):
    head.loss(labels, LOGITS1, {'x': np.ones((2, 1))})
  with pytest.raises(ValueError, match=r"weight_column 'w' must have shape"):
    head.loss(labels, LOGITS1, {'w': np.ones((2, 3))})
  rank1 = head.loss(labels, LOGITS1, {'w': np.array([1.0, 2.0])})
  np.testing.assert_allclose(rank1, head.loss(labels, LOGITS1, {'w': np.array([[1.0], [2.0]])}))


def test_loss_fn_is_used_and_its_shape_checked():
  def loss_fn(labels, logits, features):
    return jnp.abs(logits - labels) * features['scale']

  head = heads.RegressionHead(loss_fn=loss_fn, loss_reduction=heads.Reduction.SUM)
  features = {'scale': np.array([[2.0], [1.0]], np.float32)}
  np.testing.assert_allclose(head.loss(np.array([[0.0], [0.0]]), LOGITS1, features), 2.0)
  bad = heads.RegressionHead(loss_fn=lambda labels, logits: jnp.sum(logits - labels))
  with pytest.raises(ValueError, match=r'loss_fn must return an array of shape'):
    bad.loss(np.zeros((2, 1)), LOGITS1)


def test_unknown_prediction_keys():
  with pytest.raises(ValueError, match="unknown prediction keys \\['probability'\\]"):
    heads.MultiClassHead(3).predictions(LOGITS3, keys=['probability'])
  assert list(heads.MultiClassHead(3).predictions(LOGITS3, keys=['class_ids'])) == ['class_ids']


def test_vocabulary_host_helpers():
  head = heads.MultiClassHead(3, label_vocabulary=['zebra', 'ant', 'moose'])
  assert head.classes_from_ids(np.array([[2], [0]])).tolist() == [[b'moose'], [b'zebra']]
  assert heads.BinaryClassHead().classes_from_ids(np.array([1, 0])).tolist() == [b'1', b'0']
  with pytest.raises(ValueError, match='class id 3 is out of range'):
    head.classes_from_ids(np.array([3]))
  vocab = heads.ClassVocabulary(3, ['zebra', 'ant', 'moose'], 'test')
  assert vocab.ids_from_classes([[b'ant'], ['moose']]).tolist() == [[1], [2]]
  with pytest.raises(ValueError, match="label 'cat' is not in the label vocabulary"):
    vocab.ids_from_classes(['cat'])


def test_multi_head_labels_and_logits_errors():
  head = heads.MultiHead([heads.MultiClassHead(3, name='a'), heads.RegressionHead(name='b')])
  logits = {'a': LOGITS3, 'b': LOGITS1}
  with pytest.raises(ValueError, match='labels must be a dict'):
    head.loss(np.zeros((2, 1)), logits)
  with pytest.raises(ValueError, match=r"missing values for head\(s\): \['b'\]"):
    head.loss({'a': np.zeros((2, 1), np.int32)}, logits)
  with pytest.raises(ValueError, match=r"logits has missing values for head\(s\): \['a'\]"):
    head.predictions({'b': LOGITS1})
  with pytest.raises(ValueError, match=r'\[D0, ... DN, 4\]'):
    head.predictions(LOGITS3)


def test_spec_needs_labels_outside_predict():
  head = heads.BinaryClassHead()
  with pytest.raises(ValueError, match="labels are required in mode 'eval'"):
    head.create_estimator_spec({}, je.ModeKeys.EVAL, LOGITS1)
  with pytest.raises(ValueError, match='requires an optimizer'):
    head.create_estimator_spec({}, je.ModeKeys.TRAIN, LOGITS1, np.array([[0], [1]]))
