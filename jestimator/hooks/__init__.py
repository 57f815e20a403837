"""Host-side hooks run by train, evaluate and predict (`base.py` holds the protocol)."""

from jestimator.hooks.base import CheckpointSaverListener, Hook, Request, RunContext, StopAtStepHook
from jestimator.hooks.basic_hooks import (FinalOpsHook, LoggingTensorHook, NanTensorHook,
                                          ProfilerHook, StepCounterHook)
from jestimator.hooks.summary_saver import SummarySaverHook

__all__ = ['CheckpointSaverListener', 'FinalOpsHook', 'Hook', 'LoggingTensorHook',
           'NanTensorHook', 'ProfilerHook', 'Request', 'RunContext', 'StepCounterHook',
           'StopAtStepHook', 'SummarySaverHook']
