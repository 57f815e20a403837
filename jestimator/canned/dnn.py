"""`DNNClassifier` and `DNNRegressor` (tf.estimator's feed-forward models).

Logits: `DenseFeatures(feature_columns)` -> `layers.DNN(hidden_units,
activation_fn, dropout, batch_norm)` -> a Dense logits layer (glorot-uniform
kernel), all under the parameter scope `dnn`. Trained by default with
Adagrad at tf.estimator's learning rate 0.05.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax

from jestimator.canned.base import CannedEstimator, classifier_head, weight_column_parts
from jestimator.feature_column.base import DenseColumn
from jestimator.feature_column.dense_features import DenseFeatures, sorted_columns
from jestimator.heads import Reduction, RegressionHead
from jestimator.layers.dnn import DNN
from jestimator.optimizers.names import DNN_LEARNING_RATE, get_optimizer
from jestimator.spec import ModeKeys


class DNNLogits(nn.Module):
  """`features -> [batch, units]`: input layer, hidden layers, logits layer."""

  feature_columns: Sequence[DenseColumn]
  hidden_units: Sequence[int]
  units: int
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dropout: float | None = None
  batch_norm: bool = False

  @nn.compact
  def __call__(self, features, train: bool) -> jax.Array:
    net = DenseFeatures(self.feature_columns, name='input_layer')(features)
    net = DNN(self.hidden_units, self.activation, self.dropout, self.batch_norm,
              name='hidden')(net, train=train)
    return nn.Dense(self.units, kernel_init=nn.initializers.glorot_uniform(),
                    name='logits')(net)


def dnn_logit_fn(feature_columns, hidden_units, units: int, activation, dropout, batch_norm,
                 name: str = 'dnn'):
  """`(features, mode) -> [batch, units]` logits of a `DNNLogits` named `name`."""
  sorted_columns(feature_columns, 'DNN model', (DenseColumn,),
                 'wrap a categorical column in embedding_column or indicator_column.')
  if not hidden_units:
    raise ValueError('hidden_units must be a non-empty list of layer sizes, got '
                     f'{hidden_units!r}.')

  def logit_fn(features, mode):
    return DNNLogits(tuple(feature_columns), tuple(hidden_units), units, activation, dropout,
                     batch_norm, name=name)(features, train=mode == ModeKeys.TRAIN)

  return logit_fn


class DNNClassifier(CannedEstimator):
  """A feed-forward classifier (tf.estimator.DNNClassifier).

  Args:
    hidden_units: units per hidden layer, e.g. `[64, 32]`.
    feature_columns: dense columns (embedding, indicator, numeric, bucketized).
    model_dir: checkpoint directory.
    n_classes: number of classes (2: one logit and BinaryClassHead).
    weight_column: a feature name or numeric_column of per-example weights.
    label_vocabulary: class names when labels are strings.
    optimizer: an optax transformation or 'Adagrad', 'Adam', 'Ftrl',
      'RMSProp', 'SGD' (learning rate 0.05).
    activation_fn: the hidden layers' activation (default relu).
    dropout: drop probability of hidden units in training, or None.
    config: a `RunConfig`.
    loss_reduction: `Reduction.SUM_OVER_BATCH_SIZE` (default) or `SUM`.
    batch_norm: batch normalization after each hidden layer.
    sparse_lengths: `{feature key: L}` for sparse inputs.
    warm_start_from: a model_dir, checkpoint or `WarmStartSettings` to start from.
  """

  def __init__(self, hidden_units: Sequence[int], feature_columns: Sequence,
               model_dir: str | None = None, n_classes: int = 2, weight_column: Any = None,
               label_vocabulary: Sequence[str] | None = None, optimizer: Any = 'Adagrad',
               activation_fn: Callable = nn.relu, dropout: float | None = None,
               config: Any = None, loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
               batch_norm: bool = False, sparse_lengths: Mapping[str, int] | None = None,
               warm_start_from: Any = None):
    weight_key, extra = weight_column_parts(weight_column)
    head = classifier_head(n_classes, weight_key, label_vocabulary, loss_reduction)
    logit_fn = dnn_logit_fn(feature_columns, hidden_units, head.logits_dimension,
                            activation_fn, dropout, batch_norm)
    super().__init__(logit_fn, head, get_optimizer(optimizer, DNN_LEARNING_RATE),
                     feature_columns, extra, model_dir, config, sparse_lengths,
                     warm_start_from=warm_start_from)


class DNNRegressor(CannedEstimator):
  """A feed-forward regressor (tf.estimator.DNNRegressor); `label_dimension` targets.

  Arguments as `DNNClassifier`, with `label_dimension` for `n_classes` and
  no label vocabulary.
  """

  def __init__(self, hidden_units: Sequence[int], feature_columns: Sequence,
               model_dir: str | None = None, label_dimension: int = 1, weight_column: Any = None,
               optimizer: Any = 'Adagrad', activation_fn: Callable = nn.relu,
               dropout: float | None = None, config: Any = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, batch_norm: bool = False,
               sparse_lengths: Mapping[str, int] | None = None, warm_start_from: Any = None):
    weight_key, extra = weight_column_parts(weight_column)
    head = RegressionHead(label_dimension, weight_column=weight_key,
                          loss_reduction=loss_reduction)
    logit_fn = dnn_logit_fn(feature_columns, hidden_units, head.logits_dimension,
                            activation_fn, dropout, batch_norm)
    super().__init__(logit_fn, head, get_optimizer(optimizer, DNN_LEARNING_RATE),
                     feature_columns, extra, model_dir, config, sparse_lengths,
                     warm_start_from=warm_start_from)
