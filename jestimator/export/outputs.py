"""What a SavedModel signature serves: `ClassificationOutput`, `RegressionOutput`, `PredictOutput`.

A model_fn names its serving outputs in `EstimatorSpec(export_outputs={signature key: output})`,
as tf.estimator's did; the heads fill them (`serving_default`, `classification`, `regression`,
`predict`). The arrays are JAX arrays of the PREDICT trace; the export turns each output into a
TF SignatureDef with tf.estimator's method names and keys, so TF Serving's Classify, Regress and
Predict APIs work unchanged:

  ClassificationOutput  'tensorflow/serving/classify'  inputs: 'inputs' (serialized tf.Example)
                                                        outputs: 'classes' (string), 'scores'
  RegressionOutput      'tensorflow/serving/regress'   inputs: 'inputs'; outputs: 'outputs'
  PredictOutput         'tensorflow/serving/predict'   inputs: the receiver tensors;
                                                        outputs: its dict

JAX has no strings, so `classes` are integer class ids on device; in the SavedModel they become
names: the host transforms' class names when the ids are a prediction (`classes`,
`all_classes`), else `class_names`, else the ids as strings (b'0', b'1', ... as tf's heads).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jestimator.tf_import import tf
from jestimator.tree_paths import path_name

DEFAULT_SERVING_KEY = 'serving_default'
CLASSIFY_SERVING_KEY = 'classification'
REGRESS_SERVING_KEY = 'regression'
PREDICT_SERVING_KEY = 'predict'


class ExportOutput:
  """Base class: the arrays one signature serves, and how its SignatureDef is written."""

  def arrays(self) -> dict[str, Any]:
    """`{field: array}` (None fields left out), the JAX side."""
    raise NotImplementedError

  def signature_def(self, receiver_tensors: Mapping[str, Any], tensors: Mapping[str, Any]):
    """The SignatureDef over TF `tensors` (keyed as `arrays()`); raises ValueError when the
    receiver cannot feed this kind of signature (as tf.estimator, the export then skips it)."""
    raise NotImplementedError


def _array(value: Any, what: str):
  if not hasattr(value, 'shape') or not hasattr(value, 'dtype'):
    raise TypeError(f'{what} must be an array, got {type(value).__name__}.')
  return value


def _single_string_input(receiver_tensors: Mapping[str, Any], kind: str):
  """tf.estimator's rule: classify/regress signatures take one tf.string tensor (tf.Examples)."""
  if len(receiver_tensors) != 1:
    raise ValueError(f'{kind} signatures can only accept a single tensor input of type '
                     'tf.string (serialized tf.Examples, see build_parsing_serving_input_'
                     f'receiver_fn); received {sorted(receiver_tensors)}.')
  (examples,) = receiver_tensors.values()
  if examples.dtype != tf.string:
    raise ValueError(f'{kind} signatures can only accept a single tensor input of type '
                     f'tf.string; received {examples.dtype.name}.')
  return examples


class ClassificationOutput(ExportOutput):
  """A classify signature (tf.estimator.export.ClassificationOutput).

  Args:
    scores: float `[batch, n_classes]` (e.g. probabilities).
    classes: integer class ids `[batch, n_classes]` (names in the SavedModel).
    class_names: names of ids 0..n-1, used when `classes` is not a prediction the host
      transforms name; default the ids as strings.
  """

  def __init__(self, scores: Any = None, classes: Any = None,
               class_names: Any = None):
    if scores is None and classes is None:
      raise ValueError('ClassificationOutput: at least one of scores and classes must be set.')
    if scores is not None and not jnp.issubdtype(_array(scores, 'scores').dtype, jnp.floating):
      raise ValueError(f'ClassificationOutput: scores must be floating point, got '
                       f'{scores.dtype}.')
    if classes is not None and not jnp.issubdtype(_array(classes, 'classes').dtype,
                                                  jnp.integer):
      raise ValueError(f'ClassificationOutput: classes must be integer class ids (the '
                       f'SavedModel serves them as names), got {classes.dtype}.')
    self.scores, self.classes = scores, classes
    self.class_names = None if class_names is None else tuple(
        n if isinstance(n, bytes) else str(n).encode('utf-8') for n in class_names)

  def arrays(self) -> dict[str, Any]:
    return {k: v for k, v in (('scores', self.scores), ('classes', self.classes))
            if v is not None}

  def signature_def(self, receiver_tensors, tensors):
    examples = _single_string_input(receiver_tensors, 'Classification')
    classes = tensors.get('classes')
    if classes is not None and classes.dtype != tf.string:
      classes = class_names_of(classes, self.class_names)
    return tf.compat.v1.saved_model.classification_signature_def(
        examples, classes, tensors.get('scores'))


class RegressionOutput(ExportOutput):
  """A regress signature (tf.estimator.export.RegressionOutput): float `value` `[batch, 1]`."""

  def __init__(self, value: Any):
    if value is None or not jnp.issubdtype(_array(value, 'value').dtype, jnp.floating):
      raise ValueError('RegressionOutput: value must be a floating point array, got '
                       f'{getattr(value, "dtype", value)}.')
    self.value = value

  def arrays(self) -> dict[str, Any]:
    return {'value': self.value}

  def signature_def(self, receiver_tensors, tensors):
    examples = _single_string_input(receiver_tensors, 'Regression')
    return tf.compat.v1.saved_model.regression_signature_def(examples, tensors['value'])


class PredictOutput(ExportOutput):
  """A predict signature (tf.estimator.export.PredictOutput): `outputs` is a dict
  `{name: array}`, or one array (served as 'output')."""

  def __init__(self, outputs: Any):
    if not isinstance(outputs, Mapping):
      outputs = {'output': outputs}
    if not outputs:
      raise ValueError('PredictOutput: outputs must not be empty.')
    for key, value in outputs.items():
      if not isinstance(key, str):
        raise ValueError(f'PredictOutput: output keys must be strings, got {key!r}.')
      _array(value, f'PredictOutput output {key!r}')
    self.outputs = dict(outputs)

  def arrays(self) -> dict[str, Any]:
    return dict(self.outputs)

  def signature_def(self, receiver_tensors, tensors):
    return tf.compat.v1.saved_model.predict_signature_def(dict(receiver_tensors), dict(tensors))


def class_names_of(ids, class_names):
  """TF string tensor of the names of integer `ids` (`class_names`, else the ids as text)."""
  if class_names is None:
    return tf.strings.as_string(ids)
  return tf.gather(tf.constant(np.array(class_names, dtype=object)), tf.cast(ids, tf.int32))


def serving_outputs(export_outputs: Mapping[str, ExportOutput] | None,
                    predictions: Any) -> dict[str, ExportOutput]:
  """The signatures to export (tf.estimator's `get_export_outputs`).

  None -> `{'serving_default': PredictOutput(predictions)}` (every prediction). A single
  output under another key is also served as the default; several must name a default.
  """
  if export_outputs is None:
    flat = jax.tree_util.tree_flatten_with_path(predictions)[0]
    outputs = predictions if not isinstance(predictions, Mapping) or all(
        len(p) == 1 for p, _ in flat) else {path_name(p): v for p, v in flat}
    return {DEFAULT_SERVING_KEY: PredictOutput(outputs)}
  if not isinstance(export_outputs, Mapping):
    raise TypeError(f'EstimatorSpec.export_outputs must be a dict, got '
                    f'{type(export_outputs).__name__}.')
  out = dict(export_outputs)
  for key, value in out.items():
    if not isinstance(value, ExportOutput):
      raise TypeError(f'export_outputs[{key!r}] must be a ClassificationOutput, '
                      f'RegressionOutput or PredictOutput, got {type(value).__name__}.')
  if len(out) == 1 and DEFAULT_SERVING_KEY not in out:
    out[DEFAULT_SERVING_KEY] = next(iter(out.values()))
  if len(out) > 1 and DEFAULT_SERVING_KEY not in out:
    raise ValueError('Multiple export_outputs were provided, but none of them is specified as '
                     f'the default. Do this by naming one of them {DEFAULT_SERVING_KEY!r}; '
                     f'given {sorted(out)}.')
  return out
