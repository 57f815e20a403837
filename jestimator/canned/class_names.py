"""`ClassNames`: a classifier's `classes` predictions as names, without a label vocabulary.

tf.estimator's classifiers return `classes` / `all_classes` as bytes: the
vocabulary's names, or b'0', b'1', ... without one. With a vocabulary the
heads' `LabelLookup` does both directions (string labels -> ids in tf.data,
ids -> names in predict); without one only the way out is left, which is this.
"""

from __future__ import annotations

from typing import Any

from jestimator.heads import host_transforms
from jestimator.heads.keys import PredictionKeys
from jestimator.inputs.host_transform import HostTransform


class ClassNames(HostTransform):
  """Predicted class ids -> b'0', b'1', ... (`head.classes_from_ids`) in `predict`."""

  def __init__(self, head):
    self._head = head

  def postprocess(self, predictions: Any) -> Any:
    if not isinstance(predictions, dict):
      return predictions
    out = dict(predictions)
    for key in (PredictionKeys.CLASSES, PredictionKeys.ALL_CLASSES):
      if key in out:
        out[key] = self._head.classes_from_ids(out[key])
    return out


def class_transforms(head) -> list[HostTransform]:
  """`LabelLookup` for a head with a label vocabulary, else `ClassNames`."""
  if head.label_vocabulary is not None:
    return host_transforms(head)
  return [ClassNames(head)]
