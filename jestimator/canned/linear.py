"""`LinearClassifier` and `LinearRegressor` (tf.estimator's, on `LinearModel`).

Logits are `LinearModel(feature_columns, units=head.logits_dimension,
sparse_combiner)` -- one weight per bucket of each categorical column, one
per value of each dense column, a bias, all starting at zero -- trained by
default with FTRL at tf.estimator's learning rate 0.2.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from jestimator.canned.base import CannedEstimator, classifier_head, weight_column_parts
from jestimator.feature_column.base import CategoricalColumn, DenseColumn
from jestimator.feature_column.dense_features import sorted_columns
from jestimator.feature_column.linear_model import LinearModel
from jestimator.heads import Reduction, RegressionHead
from jestimator.optimizers.names import LINEAR_LEARNING_RATE, get_optimizer


def linear_logit_fn(feature_columns, units: int, sparse_combiner: str, name: str = 'linear'):
  """`(features, mode) -> [batch, units]` logits of a LinearModel named `name`."""
  sorted_columns(feature_columns, 'linear model', (CategoricalColumn, DenseColumn), '')

  def logit_fn(features, mode):
    del mode
    return LinearModel(tuple(feature_columns), units=units, sparse_combiner=sparse_combiner,
                       name=name)(features)

  return logit_fn


class LinearClassifier(CannedEstimator):
  """A linear classifier (tf.estimator.LinearClassifier).

  Args:
    feature_columns: categorical and dense columns.
    model_dir: checkpoint directory.
    n_classes: number of classes (2: one logit and BinaryClassHead).
    weight_column: a feature name or numeric_column of per-example weights.
    label_vocabulary: class names when labels are strings.
    optimizer: an optax transformation or 'Adagrad', 'Adam', 'Ftrl',
      'RMSProp', 'SGD' (learning rate 0.2).
    config: a `RunConfig`.
    loss_reduction: `Reduction.SUM_OVER_BATCH_SIZE` (default) or `SUM`.
    sparse_combiner: how a multivalent categorical input combines: 'sum',
      'mean' or 'sqrtn'.
    sparse_lengths: `{feature key: L}` for sparse inputs.
    warm_start_from: a model_dir, checkpoint or `WarmStartSettings` to start from.
  """

  def __init__(self, feature_columns: Sequence, model_dir: str | None = None, n_classes: int = 2,
               weight_column: Any = None, label_vocabulary: Sequence[str] | None = None,
               optimizer: Any = 'Ftrl', config: Any = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, sparse_combiner: str = 'sum',
               sparse_lengths: Mapping[str, int] | None = None, warm_start_from: Any = None):
    weight_key, extra = weight_column_parts(weight_column)
    head = classifier_head(n_classes, weight_key, label_vocabulary, loss_reduction)
    super().__init__(
        linear_logit_fn(feature_columns, head.logits_dimension, sparse_combiner), head,
        get_optimizer(optimizer, LINEAR_LEARNING_RATE), feature_columns, extra, model_dir,
        config, sparse_lengths, warm_start_from=warm_start_from)


class LinearRegressor(CannedEstimator):
  """A linear regressor (tf.estimator.LinearRegressor); `label_dimension` targets.

  Arguments as `LinearClassifier`, with `label_dimension` for `n_classes`
  and no label vocabulary.
  """

  def __init__(self, feature_columns: Sequence, model_dir: str | None = None,
               label_dimension: int = 1, weight_column: Any = None, optimizer: Any = 'Ftrl',
               config: Any = None, loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE,
               sparse_combiner: str = 'sum', sparse_lengths: Mapping[str, int] | None = None,
               warm_start_from: Any = None):
    weight_key, extra = weight_column_parts(weight_column)
    head = RegressionHead(label_dimension, weight_column=weight_key,
                          loss_reduction=loss_reduction)
    super().__init__(
        linear_logit_fn(feature_columns, head.logits_dimension, sparse_combiner), head,
        get_optimizer(optimizer, LINEAR_LEARNING_RATE), feature_columns, extra, model_dir,
        config, sparse_lengths, warm_start_from=warm_start_from)
