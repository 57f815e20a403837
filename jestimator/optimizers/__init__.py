"""Optimizers tf.estimator had and optax lacks (FTRL), and tf.estimator's optimizer names."""

from jestimator.optimizers.ftrl import FtrlState, ftrl
from jestimator.optimizers.names import OPTIMIZERS, get_optimizer

__all__ = ['FtrlState', 'OPTIMIZERS', 'ftrl', 'get_optimizer']
