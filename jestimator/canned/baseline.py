"""`BaselineClassifier` and `BaselineRegressor`: logits that ignore the features.

The model is one bias vector `[logits_dimension]` (tf.estimator's
`baseline/bias`), so it learns the label prior (classifier) or the label mean
(regressor): the number any real model must beat. It reads only the batch
size, so the host keeps just an `[batch, 1]` marker (and the weight column).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jestimator.canned.base import CannedEstimator, classifier_head, weight_column_parts
from jestimator.heads import Reduction, RegressionHead
from jestimator.inputs.host_transform import HostTransform
from jestimator.optimizers.names import BASELINE_LEARNING_RATE, get_optimizer
from jestimator.tf_import import maybe_tf, tf

EXAMPLES_KEY = 'baseline/examples'


class ExampleMarker(HostTransform):
  """Adds `baseline/examples` (int8 zeros `[batch, 1]`) so the batch size survives."""

  def transform(self, features, labels, mode):
    if not isinstance(features, dict) or not features:
      raise ValueError('Baseline estimators need features as a non-empty dict (only their batch '
                       f'size is used), got {features!r}.')
    first = next(iter(features.values()))
    if maybe_tf() is None:  # numpy features (TensorFlow made none of them)
      return {**features, EXAMPLES_KEY: np.zeros((len(first), 1), np.int8)}, labels
    if isinstance(first, tf.SparseTensor):
      batch = first.dense_shape[0]
    else:
      batch = tf.shape(first)[0] if isinstance(first, tf.Tensor) else len(first)
    marker = tf.zeros(tf.stack([tf.cast(batch, tf.int32), 1]), tf.int8)
    if tf.executing_eagerly() and not isinstance(first, (tf.Tensor, tf.SparseTensor)):
      marker = marker.numpy()
    return {**features, EXAMPLES_KEY: marker}, labels


class Bias(nn.Module):
  """`[batch, units]`: one learned bias (zero-initialized) repeated for every example."""

  units: int

  @nn.compact
  def __call__(self, marker):
    bias = self.param('bias', nn.initializers.zeros, (self.units,), jnp.float32)
    return jnp.broadcast_to(bias, (marker.shape[0], self.units))


def baseline_logit_fn(units: int):
  """`(features, mode) -> [batch, units]` logits of a `Bias` named `baseline`."""

  def logit_fn(features, mode):
    del mode
    return Bias(units, name='baseline')(features[EXAMPLES_KEY])

  return logit_fn


class BaselineClassifier(CannedEstimator):
  """Predicts the class prior (tf.estimator.BaselineClassifier).

  Args:
    model_dir, n_classes, weight_column, label_vocabulary, config,
    loss_reduction, warm_start_from: as LinearClassifier.
    optimizer: an optax transformation or a name (learning rate 0.3), default 'Ftrl'.
  """

  def __init__(self, model_dir: str | None = None, n_classes: int = 2, weight_column: Any = None,
               label_vocabulary: Sequence[str] | None = None, optimizer: Any = 'Ftrl',
               config: Any = None, loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
               warm_start_from: Any = None):
    weight_key, extra = weight_column_parts(weight_column)
    head = classifier_head(n_classes, weight_key, label_vocabulary, loss_reduction)
    super().__init__(baseline_logit_fn(head.logits_dimension), head,
                     get_optimizer(optimizer, BASELINE_LEARNING_RATE), [], extra, model_dir,
                     config, transforms=[ExampleMarker()], warm_start_from=warm_start_from)


class BaselineRegressor(CannedEstimator):
  """Predicts the label mean (tf.estimator.BaselineRegressor).

  Arguments as `BaselineClassifier`, with `label_dimension` for `n_classes`
  and no label vocabulary.
  """

  def __init__(self, model_dir: str | None = None, label_dimension: int = 1,
               weight_column: Any = None, optimizer: Any = 'Ftrl', config: Any = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, warm_start_from: Any = None):
    weight_key, extra = weight_column_parts(weight_column)
    head = RegressionHead(label_dimension, weight_column=weight_key,
                          loss_reduction=loss_reduction)
    super().__init__(baseline_logit_fn(head.logits_dimension), head,
                     get_optimizer(optimizer, BASELINE_LEARNING_RATE), [], extra, model_dir,
                     config, transforms=[ExampleMarker()], warm_start_from=warm_start_from)
