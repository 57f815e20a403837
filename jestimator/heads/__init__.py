"""Heads: logits -> loss, predictions and metric states (tf.estimator's v2 heads).

  head = je.heads.MultiClassHead(n_classes=3)
  return head.create_estimator_spec(features=features, mode=mode, logits=logits,
                                    labels=labels, optimizer=optax.adam(1e-3))
"""

from jestimator.heads.base import Head
from jestimator.heads.binary_class import BinaryClassHead
from jestimator.heads.candidate_sampling import sampled_softmax_loss
from jestimator.heads.keys import MetricKeys, PredictionKeys
from jestimator.heads.label_lookup import LabelLookup, host_transforms
from jestimator.heads.logistic_regression import LogisticRegressionHead
from jestimator.heads.losses import Reduction, compute_weighted_loss
from jestimator.heads.multi_class import MultiClassHead
from jestimator.heads.multi_head import MultiHead
from jestimator.heads.multi_label import MultiLabelHead, multi_hot_from_ids
from jestimator.heads.poisson_regression import PoissonRegressionHead, log_poisson_loss
from jestimator.heads.regression import RegressionHead
from jestimator.heads.sampled_softmax import SampledSoftmaxHead
from jestimator.heads.vocabulary import ClassVocabulary

__all__ = [
    'BinaryClassHead', 'ClassVocabulary', 'Head', 'LabelLookup', 'LogisticRegressionHead',
    'MetricKeys',
    'MultiClassHead', 'MultiHead', 'MultiLabelHead', 'PoissonRegressionHead', 'PredictionKeys',
    'Reduction', 'RegressionHead', 'SampledSoftmaxHead', 'compute_weighted_loss',
    'log_poisson_loss', 'host_transforms', 'multi_hot_from_ids', 'sampled_softmax_loss',
]
