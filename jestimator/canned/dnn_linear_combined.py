"""`DNNLinearCombinedClassifier` / `Regressor`: wide & deep (tf.estimator's).

Logits are the sum of a `LinearModel` over `linear_feature_columns` (the
wide part, parameters under `linear`) and a DNN over `dnn_feature_columns`
(the deep part, under `dnn`). Each part has its own optimizer, joined with
`optax.multi_transform` on those two scopes. tf.estimator's defaults: FTRL
at min(0.005, 1/sqrt(#linear columns)) for the linear part, Adagrad at
0.001 for the DNN.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import optax

from jestimator.canned.base import CannedEstimator, classifier_head, weight_column_parts
from jestimator.canned.dnn import dnn_logit_fn
from jestimator.canned.linear import linear_logit_fn
from jestimator.heads import Reduction, RegressionHead
from jestimator.optimizers.names import (COMBINED_DNN_LEARNING_RATE,
                                         combined_linear_learning_rate, get_optimizer)


def wide_and_deep(units: int, linear_feature_columns, linear_optimizer, linear_sparse_combiner,
              dnn_feature_columns, dnn_optimizer, dnn_hidden_units, dnn_activation_fn,
              dnn_dropout, batch_norm):
  """`(logit_fn, optimizer, all columns)` of a wide & deep model with `units` logits."""
  linear_columns = list(linear_feature_columns or [])
  dnn_columns = list(dnn_feature_columns or [])
  if not linear_columns and not dnn_columns:
    raise ValueError('Either linear_feature_columns or dnn_feature_columns must be defined.')
  parts, optimizers = [], {}
  if linear_columns:
    parts.append(linear_logit_fn(linear_columns, units, linear_sparse_combiner))
    optimizers['linear'] = get_optimizer(
        linear_optimizer, combined_linear_learning_rate(len(linear_columns)))
  if dnn_columns:
    if not dnn_hidden_units:
      raise ValueError('dnn_hidden_units must be defined when dnn_feature_columns is specified.')
    parts.append(dnn_logit_fn(dnn_columns, dnn_hidden_units, units, dnn_activation_fn,
                              dnn_dropout, batch_norm))
    optimizers['dnn'] = get_optimizer(dnn_optimizer, COMBINED_DNN_LEARNING_RATE)

  def logit_fn(features, mode):
    return sum(part(features, mode) for part in parts)

  optimizer = optax.multi_transform(optimizers, lambda params: {k: k for k in params})
  columns = linear_columns + [c for c in dnn_columns if c not in linear_columns]
  return logit_fn, optimizer, columns


class DNNLinearCombinedClassifier(CannedEstimator):
  """A wide & deep classifier (tf.estimator.DNNLinearCombinedClassifier).

  Args:
    model_dir: checkpoint directory.
    linear_feature_columns: columns of the linear (wide) part.
    linear_optimizer: its optimizer (name or optax), default 'Ftrl'.
    dnn_feature_columns: dense columns of the DNN (deep) part.
    dnn_optimizer: its optimizer (name or optax), default 'Adagrad'.
    dnn_hidden_units: units per hidden layer (required with dnn columns).
    dnn_activation_fn, dnn_dropout, batch_norm: as DNNClassifier.
    n_classes, weight_column, label_vocabulary, config, loss_reduction: as
      LinearClassifier.
    linear_sparse_combiner: the linear part's sparse combiner.
    sparse_lengths: `{feature key: L}` for sparse inputs.
    warm_start_from: a model_dir, checkpoint or `WarmStartSettings` to start from.
  """

  def __init__(self, model_dir: str | None = None, linear_feature_columns: Sequence = (),
               linear_optimizer: Any = 'Ftrl', dnn_feature_columns: Sequence = (),
               dnn_optimizer: Any = 'Adagrad', dnn_hidden_units: Sequence[int] | None = None,
               dnn_activation_fn: Callable = nn.relu, dnn_dropout: float | None = None,
               n_classes: int = 2, weight_column: Any = None,
               label_vocabulary: Sequence[str] | None = None, config: Any = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, batch_norm: bool = False,
               linear_sparse_combiner: str = 'sum',
               sparse_lengths: Mapping[str, int] | None = None, warm_start_from: Any = None):
    weight_key, extra = weight_column_parts(weight_column)
    head = classifier_head(n_classes, weight_key, label_vocabulary, loss_reduction)
    logit_fn, optimizer, columns = wide_and_deep(
        head.logits_dimension, linear_feature_columns, linear_optimizer, linear_sparse_combiner,
        dnn_feature_columns, dnn_optimizer, dnn_hidden_units, dnn_activation_fn, dnn_dropout,
        batch_norm)
    super().__init__(logit_fn, head, optimizer, columns, extra, model_dir, config,
                     sparse_lengths, warm_start_from=warm_start_from)


class DNNLinearCombinedRegressor(CannedEstimator):
  """A wide & deep regressor (tf.estimator.DNNLinearCombinedRegressor).

  Arguments as `DNNLinearCombinedClassifier`, with `label_dimension` for
  `n_classes` and no label vocabulary.
  """

  def __init__(self, model_dir: str | None = None, linear_feature_columns: Sequence = (),
               linear_optimizer: Any = 'Ftrl', dnn_feature_columns: Sequence = (),
               dnn_optimizer: Any = 'Adagrad', dnn_hidden_units: Sequence[int] | None = None,
               dnn_activation_fn: Callable = nn.relu, dnn_dropout: float | None = None,
               label_dimension: int = 1, weight_column: Any = None, config: Any = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, batch_norm: bool = False,
               linear_sparse_combiner: str = 'sum',
               sparse_lengths: Mapping[str, int] | None = None, warm_start_from: Any = None):
    weight_key, extra = weight_column_parts(weight_column)
    head = RegressionHead(label_dimension, weight_column=weight_key,
                          loss_reduction=loss_reduction)
    logit_fn, optimizer, columns = wide_and_deep(
        head.logits_dimension, linear_feature_columns, linear_optimizer, linear_sparse_combiner,
        dnn_feature_columns, dnn_optimizer, dnn_hidden_units, dnn_activation_fn, dnn_dropout,
        batch_norm)
    super().__init__(logit_fn, head, optimizer, columns, extra, model_dir, config,
                     sparse_lengths, warm_start_from=warm_start_from)
