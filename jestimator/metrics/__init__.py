"""Metric states: empty / from_model_output / merge / compute (pure, on device)."""

from jestimator.metrics.accuracy import Accuracy
from jestimator.metrics.base import Metric, batch_weights
from jestimator.metrics.mean import Mean

__all__ = ['Accuracy', 'Mean', 'Metric', 'batch_weights']
