"""The device side: TrainState, the model_fn transform, pure steps, the compiled runner."""

from jestimator.example_mask import example_mask
from jestimator.training.train_state import TrainState

__all__ = ['TrainState', 'example_mask']
