"""Host-side hooks run by `Estimator.train`."""

from jestimator.hooks.base import Hook, RunContext, StopAtStepHook

__all__ = ['Hook', 'RunContext', 'StopAtStepHook']
