"""Canned estimators on small synthetic tables: every kind trains, evaluates and predicts.

Linear, DNN, wide & deep and baseline, classifier and regressor, with string
labels through a label vocabulary, weight columns, dropout and batch norm,
separate optimizers for the wide and deep parts; plus tf.estimator's
argument errors. (Parity with tf.estimator's numbers: test_canned_penguins.)
"""

import jax
import numpy as np
import optax
import pytest
import tensorflow as tf

import jestimator as je
import jestimator.canned as canned
import jestimator.feature_column as fc
from conftest import one_device_mesh

CONFIG = je.RunConfig(seed=0, mesh=one_device_mesh(), progress_bar=False,
                      log_step_count_steps=None)
COLOR = fc.categorical_column_with_vocabulary_list('color', ['red', 'green', 'blue'])
X = fc.numeric_column('x')


def table(n=48, seed=0):
  rng = np.random.RandomState(seed)
  color = rng.choice(['red', 'green', 'blue'], n)
  x = rng.randn(n, 1).astype(np.float32)
  label = np.where(color == 'red', 'yes', np.where(x[:, 0] > 0, 'yes', 'no'))
  target = (x[:, 0] * 2.0 + (color == 'red') + 1.0).astype(np.float32)
  features = {'color': color.reshape(-1, 1).astype(object), 'x': x,
              'w': np.ones((n, 1), np.float32)}
  return features, label.reshape(-1, 1).astype(object), target.reshape(-1, 1)


def input_fn(features, labels, repeat=True):
  def fn():
    ds = tf.data.Dataset.from_tensor_slices(
        features if labels is None else (features, labels))
    return (ds.repeat() if repeat else ds).batch(16)
  return fn


CLASSIFIERS = {
    'linear': lambda **kw: canned.LinearClassifier([COLOR, X], **kw),
    'dnn': lambda **kw: canned.DNNClassifier([8], [fc.indicator_column(COLOR), X], dropout=0.1,
                                             **kw),
    'wide_deep': lambda **kw: canned.DNNLinearCombinedClassifier(
        linear_feature_columns=[COLOR], dnn_feature_columns=[X], dnn_hidden_units=[8],
        dnn_optimizer=optax.adam(0.05), linear_optimizer='Ftrl', **kw),
}


@pytest.mark.parametrize('kind', sorted(CLASSIFIERS))
def test_classifiers_learn_string_labels_and_predict_names(kind, model_dir):
  features, labels, _ = table()
  est = CLASSIFIERS[kind](label_vocabulary=['no', 'yes'], weight_column='w', config=CONFIG,
                          model_dir=model_dir, optimizer='Adam') if kind != 'wide_deep' else \
      CLASSIFIERS[kind](label_vocabulary=['no', 'yes'], weight_column='w', config=CONFIG,
                        model_dir=model_dir)
  est.train(input_fn(features, labels), steps=60)
  metrics = est.evaluate(input_fn(features, labels, repeat=False))
  assert metrics['accuracy'] > 0.85 and 'auc' in metrics
  first = next(est.predict(input_fn({k: v[:4] for k, v in features.items()}, None, False)))
  assert first['classes'][0] in (b'no', b'yes')
  assert list(first['all_classes']) == [b'no', b'yes']


def test_dnn_batch_norm_keeps_moving_statistics(model_dir):
  features, labels, _ = table()
  est = canned.DNNClassifier([8, 4], [X], batch_norm=True, label_vocabulary=['no', 'yes'],
                             config=CONFIG, model_dir=model_dir)
  est.train(input_fn(features, labels), steps=3)
  mean = est.get_variable_value('batch_stats/dnn/hidden/batchnorm_1/mean')
  assert mean.shape == (4,) and np.any(mean != 0)


def test_wide_and_deep_parts_have_their_own_parameters_and_optimizers(model_dir):
  features, labels, _ = table()
  est = CLASSIFIERS['wide_deep'](label_vocabulary=['no', 'yes'], config=CONFIG,
                                 model_dir=model_dir)
  est.train(input_fn(features, labels), steps=2)
  names = est.get_variable_names()
  assert 'params/linear/color' in names and 'params/dnn/logits/kernel' in names
  assert 'params/dnn/input_layer/x' not in names  # numeric columns have no parameters


@pytest.mark.parametrize('kind', ['linear', 'dnn', 'wide_deep', 'baseline'])
def test_regressors_fit_the_target(kind, model_dir):
  features, _, target = table()
  make = {
      'linear': lambda: canned.LinearRegressor([COLOR, X], optimizer='SGD', config=CONFIG,
                                              model_dir=model_dir),
      'dnn': lambda: canned.DNNRegressor([8], [fc.indicator_column(COLOR), X], optimizer='Adam',
                                         config=CONFIG, model_dir=model_dir),
      'wide_deep': lambda: canned.DNNLinearCombinedRegressor(
          linear_feature_columns=[COLOR, X], dnn_feature_columns=[X], dnn_hidden_units=[4],
          linear_optimizer='SGD', config=CONFIG, model_dir=model_dir),
      'baseline': lambda: canned.BaselineRegressor(optimizer='SGD', config=CONFIG,
                                                   model_dir=model_dir),
  }[kind]
  est = make()
  est.train(input_fn(features, target), steps=150)
  metrics = est.evaluate(input_fn(features, target, repeat=False))
  if kind == 'baseline':  # the best constant is the mean: its loss is the variance
    assert metrics['average_loss'] < 1.1 * target.var()
    assert sorted(est.get_variable_names()) == ['global_step', 'params/baseline/bias']
  else:
    assert metrics['average_loss'] < 0.1 * target.var()


def test_baseline_classifier_learns_the_prior_and_numeric_weight_column(model_dir):
  features, labels, _ = table()
  est = canned.BaselineClassifier(n_classes=2, label_vocabulary=['no', 'yes'],
                                  weight_column=fc.numeric_column('w'), config=CONFIG,
                                  model_dir=model_dir)
  est.train(input_fn(features, labels), steps=200)
  prior = np.mean(labels == 'yes')
  logit = float(est.get_variable_value('params/baseline/bias')[0])
  np.testing.assert_allclose(jax.nn.sigmoid(logit), prior, atol=0.03)


def test_classes_without_a_vocabulary_are_id_strings(model_dir):
  features, labels, _ = table()
  ids = (labels == 'yes').astype(np.int32)
  est = canned.LinearClassifier([COLOR, X], n_classes=3, config=CONFIG, model_dir=model_dir)
  est.train(input_fn(features, ids), steps=2)
  first = next(est.predict(input_fn(features, None, False)))
  assert list(first['all_classes']) == [b'0', b'1', b'2']


def test_an_unknown_label_is_named(model_dir):
  features, labels, _ = table()
  labels[3, 0] = 'maybe'
  est = canned.LinearClassifier([COLOR, X], label_vocabulary=['no', 'yes'], config=CONFIG,
                                model_dir=model_dir)
  with pytest.raises(ValueError, match=r'label not in label_vocabulary.*unknown labels: maybe'):
    est.train(input_fn(features, labels), steps=2)


def test_argument_errors():
  with pytest.raises(ValueError, match='n_classes must be > 1'):
    canned.LinearClassifier([X], n_classes=1)
  with pytest.raises(ValueError, match="Unsupported optimizer name: 'Adadelta'"):
    canned.DNNClassifier([4], [X], optimizer='Adadelta')
  with pytest.raises(ValueError, match=r"column 'color'.*embedding_column or indicator_column"):
    canned.DNNClassifier([4], [COLOR])
  with pytest.raises(ValueError, match='Either linear_feature_columns or dnn_feature_columns'):
    canned.DNNLinearCombinedClassifier()
  with pytest.raises(ValueError, match='dnn_hidden_units must be defined'):
    canned.DNNLinearCombinedRegressor(dnn_feature_columns=[X])
