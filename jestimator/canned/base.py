"""What every canned estimator shares: heads, transforms, and the model_fn around logits.

A canned estimator is an `Estimator` whose model_fn is "logits from a Flax
model of the features, through a head": `CannedEstimator` takes the logits
function, the head and the optimizer, and sets up the host transforms --
`FeatureTransform(columns)` for the feature columns (and a numeric weight
column), then a classifier's label vocabulary (`heads.LabelLookup`) or
class names (`ClassNames`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import optax

from jestimator import heads
from jestimator.canned.class_names import class_transforms
from jestimator.estimator import Estimator
from jestimator.feature_column import base as fc_base
from jestimator.feature_column.numeric import NumericColumn
from jestimator.feature_column.transform import FeatureTransform, check_columns
from jestimator.inputs.host_transform import HostTransform


def classifier_head(n_classes: int, weight_column: str | None,
                    label_vocabulary: Sequence[str] | None, loss_reduction: str) -> heads.Head:
  """BinaryClassHead for two classes, MultiClassHead for more (tf.estimator's choice)."""
  if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes <= 1:
    raise ValueError(f'n_classes must be > 1: {n_classes!r}.')
  if n_classes == 2:
    return heads.BinaryClassHead(weight_column=weight_column, label_vocabulary=label_vocabulary,
                                 loss_reduction=loss_reduction)
  return heads.MultiClassHead(n_classes, weight_column=weight_column,
                              label_vocabulary=label_vocabulary, loss_reduction=loss_reduction)


def weight_column_parts(weight_column: str | NumericColumn | None):
  """(the head's weight feature key, the columns that produce it)."""
  if weight_column is None or isinstance(weight_column, str):
    return weight_column, []
  if isinstance(weight_column, NumericColumn):
    return fc_base.value_key(weight_column.name), [weight_column]
  raise ValueError(f'weight_column must be a feature name or a numeric_column, got '
                   f'{weight_column!r}.')


class CannedEstimator(Estimator):
  """An Estimator computing `head(logit_fn(features, mode))`.

  Args:
    logit_fn: `(features, mode) -> logits [batch, head.logits_dimension]`,
      building Flax modules inline (it runs inside the model_fn).
    head: a `jestimator.heads` head.
    optimizer: the optax transformation used in training.
    feature_columns: the columns whose host half runs on every input.
    extra_columns: columns the head needs besides (a numeric weight column).
    model_dir, config: as for `Estimator`.
    sparse_lengths: `{feature key: L}` for sparse inputs (`FeatureTransform`).
    transforms: host transforms applied before the feature columns.
    warm_start_from: a checkpoint path or `WarmStartSettings` to initialise
      from when training starts afresh (as for `Estimator`).
  """

  def __init__(self, logit_fn: Callable, head: heads.Head, optimizer: optax.GradientTransformation,
               feature_columns: Sequence[fc_base.FeatureColumn],
               extra_columns: Sequence[fc_base.FeatureColumn] = (),
               model_dir: str | None = None, config: Any = None,
               sparse_lengths: Mapping[str, int] | None = None,
               transforms: Sequence[HostTransform] = (), warm_start_from: Any = None):
    columns = check_columns(feature_columns, type(self).__name__)
    columns += [c for c in extra_columns if c not in columns]
    all_transforms = [*transforms, FeatureTransform(columns, sparse_lengths)]
    if isinstance(head, (heads.BinaryClassHead, heads.MultiClassHead)):
      all_transforms += class_transforms(head)
    self._head = head

    def model_fn(features, labels, mode):
      logits = logit_fn(features, mode)
      return head.create_estimator_spec(features, mode, logits, labels, optimizer=optimizer)

    model_fn.__name__ = f'{type(self).__name__}_model_fn'
    super().__init__(model_fn, model_dir=model_dir, config=config,
                     input_transforms=all_transforms, warm_start_from=warm_start_from)

  @property
  def head(self) -> heads.Head:
    return self._head
