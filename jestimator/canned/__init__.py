"""Canned estimators (tf.estimator's): linear, DNN, wide & deep and baseline models.

  import jestimator.feature_column as fc
  est = je.canned.DNNLinearCombinedClassifier(
      linear_feature_columns=[fc.crossed_column(['island', 'sex'], 16)],
      dnn_feature_columns=[fc.numeric_column('bill_length_mm')], dnn_hidden_units=[16, 16],
      n_classes=3, label_vocabulary=['Adelie', 'Chinstrap', 'Gentoo'])
  est.train(input_fn, max_steps=1000)

Each is an `Estimator` built from a head (`jestimator.heads`), Flax layers
over feature columns (`jestimator.feature_column`, `jestimator.layers`) and
an optimizer (`jestimator.optimizers`), with tf.estimator's arguments and
defaults.
"""

from jestimator.canned.base import CannedEstimator
from jestimator.canned.baseline import BaselineClassifier, BaselineRegressor
from jestimator.canned.class_names import ClassNames
from jestimator.canned.dnn import DNNClassifier, DNNRegressor
from jestimator.canned.dnn_linear_combined import (DNNLinearCombinedClassifier,
                                                   DNNLinearCombinedRegressor)
from jestimator.canned.linear import LinearClassifier, LinearRegressor

__all__ = [
    'BaselineClassifier', 'BaselineRegressor', 'CannedEstimator', 'ClassNames',
    'DNNClassifier', 'DNNLinearCombinedClassifier', 'DNNLinearCombinedRegressor', 'DNNRegressor',
    'LinearClassifier', 'LinearRegressor',
]
