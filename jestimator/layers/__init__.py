"""Flax layers for model_fns: the DNN block, tf.contrib-style helpers, feature-column layers.

  def model_fn(features, labels, mode):
    net = je.layers.DenseFeatures(columns)(features)
    net = je.layers.DNN([64, 32], dropout=0.1)(net, train=mode == je.ModeKeys.TRAIN)
    logits = nn.Dense(3)(net)
"""

from jestimator.feature_column.dense_features import DenseFeatures
from jestimator.feature_column.linear_model import LinearModel
from jestimator.layers.dnn import DNN, fully_connected, stack

__all__ = ['DNN', 'DenseFeatures', 'LinearModel', 'fully_connected', 'stack']
