"""Metric states: empty / from_model_output / merge / compute (pure, on device)."""

from jestimator.metrics.accuracy import Accuracy
from jestimator.metrics.base import Metric, SumMetric, batch_weights
from jestimator.metrics.mean import Mean
from jestimator.metrics.accuracy_baseline import AccuracyBaseline
from jestimator.metrics.auc import AUC
from jestimator.metrics.binary_accuracy import BinaryAccuracy
from jestimator.metrics.precision_recall import Precision, Recall
from jestimator.metrics.regression import (MeanAbsoluteError, MeanSquaredError,
                                          RootMeanSquaredError)

__all__ = ['Accuracy', 'Mean', 'Metric', 'SumMetric', 'batch_weights']
__all__ += ['AUC', 'AccuracyBaseline', 'BinaryAccuracy', 'MeanAbsoluteError',
            'MeanSquaredError', 'Precision', 'Recall', 'RootMeanSquaredError']
