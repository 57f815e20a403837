"""The host half inside the serving graph: receiver -> host transforms -> model inputs, and
predictions -> postprocessing -> served values. TF ops only, so TF Serving runs them.

The Estimator's `input_transforms` are TF ops already (feature columns' lookups, hashing,
crosses, bucketizing; a head's label vocabulary). The export applies them to the receiver's
raw features in PREDICT mode, checks what comes out against the signature the checkpoint was
trained with (missing, reshaped or retyped features are named before anything converts), and
after the model turns class ids back into names as `predict` does.

A sparse input (a parsed `tf.io.VarLenFeature`) has no static width; a categorical column
takes the width its ids had in training (from the checkpoint's signature), unless the
Estimator's `FeatureTransform` was given `sparse_lengths`. An example with more values than
that fails the request, naming the column.

A host transform of one's own must create its TF resources (tables) inside `transform` (or
under `tf.init_scope()` there, as `FeatureTransform` does), so that the export's graph gets
its own; and give a `serving_postprocess` if it postprocesses (see `postprocess`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np
import tensorflow as tf

from jestimator.canned.class_names import ClassNames
from jestimator.export.outputs import class_names_of
from jestimator.feature_column.base import CategoricalColumn, ids_key
from jestimator.feature_column.transform import FeatureTransform, host_columns
from jestimator.heads.keys import PredictionKeys
from jestimator.heads.label_lookup import LabelLookup
from jestimator.inputs.host_transform import HostTransform
from jestimator.reporting import logger
from jestimator.spec import ModeKeys


def trained_sparse_lengths(transform: FeatureTransform,
                           signature: Mapping[str, tuple]) -> dict[str, int]:
  """`{raw feature key: width}` of each categorical column's ids in the trained signature,
  updated by the transform's own `sparse_lengths`."""
  lengths = {}
  for column in host_columns(transform.feature_columns):
    key = getattr(column, 'key', None)
    if isinstance(column, CategoricalColumn) and isinstance(key, str):
      shape = signature.get(ids_key(column.name), (None,))[0]
      if shape and len(shape) == 2:
        lengths.setdefault(key, int(shape[-1]))
  lengths.update(getattr(transform, '_sparse_lengths', {}))  # the user's, if given
  return lengths


def serving_transforms(transforms: Sequence[HostTransform],
                       signature: Mapping[str, tuple]) -> list[HostTransform]:
  """The transforms to build into the graph: each `FeatureTransform` anew (its tables made in
  the export graph, sparse widths from training), the others as they are."""
  return [FeatureTransform(t.feature_columns, trained_sparse_lengths(t, signature))
          if isinstance(t, FeatureTransform) else t for t in transforms]


def apply_transforms(features: Any, transforms: Sequence[HostTransform]) -> Any:
  """The receiver's raw features through the host transforms (PREDICT mode, no labels)."""
  for transform in transforms:
    try:
      features, _ = transform.transform(features, None, ModeKeys.PREDICT)
    except (ValueError, TypeError, KeyError) as e:
      raise ValueError(f"export_saved_model: the serving_input_receiver_fn's features do not "
                       f'fit the host transform {transform!r}: {e}') from e
  return features


def _canonical(dtype) -> np.dtype:
  return np.dtype(jax.dtypes.canonicalize_dtype(np.dtype(dtype)))


def _shown(shape) -> str:
  return '(' + ', '.join(['batch', *('?' if d is None else str(d) for d in shape[1:])]) + ')'


def model_features(features: Any, signature: Mapping[str, tuple]) -> tuple[Any, list[str]]:
  """`(features the model takes, names of trained features the receiver lacks)`.

  Features are checked against the trained signature `{name: (shape, dtype)}` (batch free):
  a dtype or shape that differs, a sparse or unknown-width feature is a ValueError naming
  it. Integer and float features are cast to what the device half received in training
  (int64 -> int32, float64 -> float32 without x64). Features the model was not trained with
  are left out.
  """
  if not isinstance(features, Mapping):
    features = {'': features}
  for name, value in features.items():
    if isinstance(value, Mapping):
      raise ValueError(f'export_saved_model: feature {name!r} is a nested dict; give the '
                       'receiver flat features.')
  missing = [name for name in signature if name not in features]
  unused = sorted(name for name in features if name not in signature)
  if unused:
    logger.info('export_saved_model: features the model was not trained with are left out: '
                '%s.', unused)
  out = {}
  for name, (shape, dtype) in signature.items():
    if name not in features:
      continue
    value = features[name]
    shown = f'feature {name!r}' if name else 'features'
    if not isinstance(value, tf.Tensor):
      raise ValueError(f'export_saved_model: {shown} reaches the model as a '
                       f'{type(value).__name__}; the model takes dense tensors (declare it with '
                       'a feature column, or densify it in the serving_input_receiver_fn).')
    want = _canonical(dtype)
    got = _canonical(value.dtype.as_numpy_dtype) if value.dtype != tf.string else np.dtype(
        object)
    if got != want:
      raise ValueError(f'export_saved_model: {shown} has dtype {value.dtype.name} in the '
                       f'serving graph but the model was trained with {np.dtype(dtype).name}.')
    got_shape = tuple(value.shape.as_list()) if value.shape.rank is not None else None
    if got_shape is None or len(got_shape) != len(shape) or got_shape[1:] != tuple(shape[1:]):
      raise ValueError(f'export_saved_model: {shown} has shape '
                       f'{_shown(got_shape) if got_shape else "unknown"} in the serving graph '
                       f'but the model was trained with shape {_shown(shape)}.')
    out[name] = tf.cast(value, want) if value.dtype != tf.as_dtype(want) else value
  return (out if '' not in out else out['']), missing


def _class_names(transform: HostTransform, predictions: Any) -> Any:
  """`LabelLookup` / `ClassNames` in TF: the class id predictions as names."""
  head = transform._head  # pylint: disable=protected-access
  prefix = getattr(transform, '_prefix', '')
  names = head.classes_from_ids(np.arange(getattr(head, 'n_classes', 2)))
  if not isinstance(predictions, Mapping):
    return predictions
  out = dict(predictions)
  for key in (PredictionKeys.CLASSES, PredictionKeys.ALL_CLASSES):
    if prefix + key in out:
      out[prefix + key] = class_names_of(out[prefix + key], tuple(names))
  return out


def postprocess(predictions: Any, transforms: Sequence[HostTransform]) -> Any:
  """The transforms' `postprocess` as TF ops, in order: class ids -> names.

  A transform of one's own that postprocesses gives a TF version as
  `serving_postprocess(predictions)`; numpy code cannot run inside a SavedModel.
  """
  for transform in transforms:
    tf_version = getattr(transform, 'serving_postprocess', None)
    if tf_version is not None:
      predictions = tf_version(predictions)
    elif isinstance(transform, (LabelLookup, ClassNames)):
      predictions = _class_names(transform, predictions)
    elif type(transform).postprocess is not HostTransform.postprocess:
      raise ValueError(f'export_saved_model: the host transform {transform!r} postprocesses '
                       'predictions with numpy, which cannot run inside a SavedModel: give it '
                       'a serving_postprocess(predictions) method doing the same with TF ops.')
  return predictions
