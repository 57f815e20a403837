"""jestimator: tf.estimator's API as a pure-functional JAX/Flax framework.

  import flax.linen as nn, optax, jestimator as je

  def model_fn(features, labels, mode, params):
    logits = nn.Dense(10)(features['x'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return je.EstimatorSpec(mode, loss=loss, optimizer=optax.adam(1e-3),
                            predictions={'class_ids': logits.argmax(-1)})

  est = je.Estimator(model_fn, model_dir='runs/x', config=je.RunConfig(seed=0))
  est.train(je.inputs.numpy_input_fn(x, y, shuffle=True, num_epochs=None), max_steps=100)
"""

from jestimator import tf_import  # first: TensorFlow imports without eager Keras  # noqa: F401
from jestimator import (canned, distribute, export, feature_column, heads, hooks, inputs, layers,
                        metrics, optimizers)
from jestimator.checkpoint import CheckpointDiskFullError, CheckpointReadError
from jestimator.checkpoint_check import CheckpointMismatchError
from jestimator.config import RunConfig
from jestimator.estimator import Estimator
from jestimator.model_dir_lock import ModelDirLockedError
from jestimator.nnx_model import nnx_model
from jestimator.train_loop import NanLossDuringTrainingError
from jestimator.inputs import InputContext
from jestimator.lifecycle import early_stopping
from jestimator.lifecycle.evaluator import run_evaluator
from jestimator.lifecycle.specs import EvalSpec, TrainSpec
from jestimator.summary import plot_history
from jestimator.lifecycle.train_and_evaluate import train_and_evaluate
from jestimator.inputs.host_transform import HostTransform
from jestimator.spec import EstimatorSpec, ModeKeys
from jestimator.warm_start import WarmStartSettings
from jestimator.training.checks import InvalidInputError, check
from jestimator.training.runner import DebugCheckError
from jestimator.example_mask import example_mask, masked_mean

__version__ = '0.1.0'

__all__ = [
    'CheckpointDiskFullError', 'CheckpointMismatchError', 'CheckpointReadError', 'DebugCheckError',
    'ModelDirLockedError',
    'Estimator', 'EstimatorSpec', 'EvalSpec', 'TrainSpec', 'early_stopping', 'plot_history',
    'WarmStartSettings', 'run_evaluator', 'train_and_evaluate', 'HostTransform', 'InputContext', 'InvalidInputError',
    'ModeKeys', 'NanLossDuringTrainingError', 'RunConfig', 'canned', 'check', 'distribute', 'export',
    'example_mask',
    'feature_column', 'heads', 'hooks', 'inputs', 'layers', 'masked_mean', 'metrics', 'nnx_model',
    'optimizers',
]
