"""Serving input receivers: what a SavedModel takes in, and the raw features made from it.

A `serving_input_receiver_fn` (tf.estimator's) runs once, inside the graph the export builds.
It makes placeholders -- the `receiver_tensors` a client feeds -- and the ops that turn them
into the raw features an input_fn would have given (before the Estimator's host transforms):

  spec = je.feature_column.make_parse_example_spec(columns)
  est.export_saved_model(base, je.export.build_parsing_serving_input_receiver_fn(spec))

takes serialized `tf.Example`s ('examples') and parses them with `tf.io.parse_example`.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import numpy as np

from jestimator.tf_import import tf

SINGLE_RECEIVER_NAME = 'input'  # the key of a receiver tensor given alone (tf.estimator's)


def _is_tensor(x: Any) -> bool:
  return isinstance(x, (tf.Tensor, tf.SparseTensor, tf.RaggedTensor))


class ServingInputReceiver:
  """The receiver tensors a client feeds, and the raw features made from them.

  Args:
    features: a dict `{name: tf.Tensor | tf.SparseTensor}` of raw features, or one tensor
      (passed to the host transforms and the model as is, like an input_fn's bare array).
    receiver_tensors: a dict `{name: tf.Tensor}` of the placeholders clients feed, or one
      tensor (named 'input').
  """

  def __init__(self, features: Any, receiver_tensors: Any):
    if features is None:
      raise ValueError('ServingInputReceiver: features must be defined.')
    if isinstance(features, Mapping):
      for name, value in features.items():
        if not isinstance(name, str):
          raise ValueError(f'ServingInputReceiver: feature keys must be strings: {name!r}.')
        if not _is_tensor(value):
          raise ValueError(f'ServingInputReceiver: feature {name!r} must be a Tensor or '
                           f'SparseTensor, got {type(value).__name__}.')
    elif not _is_tensor(features):
      raise ValueError('ServingInputReceiver: features must be a dict of tensors or a tensor, '
                       f'got {type(features).__name__}.')
    if receiver_tensors is None:
      raise ValueError('ServingInputReceiver: receiver_tensors must be defined.')
    if not isinstance(receiver_tensors, Mapping):
      receiver_tensors = {SINGLE_RECEIVER_NAME: receiver_tensors}
    for name, value in receiver_tensors.items():
      if not isinstance(name, str):
        raise ValueError(f'ServingInputReceiver: receiver_tensors keys must be strings: '
                         f'{name!r}.')
      if not isinstance(value, tf.Tensor):
        raise ValueError(f'ServingInputReceiver: receiver_tensor {name!r} must be a Tensor, '
                         f'got {type(value).__name__}.')
    self.features = dict(features) if isinstance(features, Mapping) else features
    self.receiver_tensors = dict(receiver_tensors)


def build_parsing_serving_input_receiver_fn(
    feature_spec: Mapping[str, Any], default_batch_size: int | None = None) -> Callable:
  """A receiver fn taking serialized `tf.Example`s ('examples', a `[batch]` string tensor)
  and parsing them with `feature_spec` (`feature_column.make_parse_example_spec(columns)`).

  Variable-length features (`tf.io.VarLenFeature`) arrive as SparseTensors; a feature
  column pads them to the width the model was trained with.
  """
  if not isinstance(feature_spec, Mapping) or not feature_spec:
    raise ValueError('build_parsing_serving_input_receiver_fn: feature_spec must be a '
                     'non-empty dict {feature key: tf.io.FixedLenFeature | VarLenFeature}.')
  feature_spec = dict(feature_spec)

  def serving_input_receiver_fn() -> ServingInputReceiver:
    serialized = tf.compat.v1.placeholder(tf.string, [default_batch_size],
                                          name='input_example_tensor')
    features = tf.io.parse_example(serialized, feature_spec)
    return ServingInputReceiver(features, {'examples': serialized})

  return serving_input_receiver_fn


def _placeholder(value: Any, name: str, default_batch_size: int | None) -> tf.Tensor:
  """A placeholder shaped `[default_batch_size, *value.shape[1:]]` of `value`'s dtype."""
  if isinstance(value, tf.TensorSpec):
    shape, dtype = value.shape, value.dtype
  elif isinstance(value, tf.Tensor):
    shape, dtype = value.shape, value.dtype
  else:
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind in 'US':
      shape, dtype = array.shape, tf.string
    else:
      shape, dtype = array.shape, tf.as_dtype(array.dtype)
  shape = tf.TensorShape(shape)
  if shape.rank is None or shape.rank == 0:
    raise ValueError(f'build_raw_serving_input_receiver_fn: feature {name!r} needs a leading '
                     f'batch dimension, got shape {shape}.')
  op_name = re.sub(r'[^A-Za-z0-9_.\-/]', '_', name).lstrip('_/-') or 'feature'
  return tf.compat.v1.placeholder(dtype, [default_batch_size] + shape.as_list()[1:],
                                  name=op_name)


def build_raw_serving_input_receiver_fn(features: Any,
                                        default_batch_size: int | None = None) -> Callable:
  """A receiver fn feeding raw features directly: one placeholder per feature.

  Args:
    features: `{name: example}` (or one example); each a tf.Tensor, tf.TensorSpec or numpy
      array whose dtype and non-batch shape the placeholder takes (its batch size is
      `default_batch_size`, None: any).
    default_batch_size: a fixed batch size for the placeholders, or None.
  """
  if isinstance(features, Mapping) and not features:
    raise ValueError('build_raw_serving_input_receiver_fn: features must not be empty.')

  def serving_input_receiver_fn() -> ServingInputReceiver:
    if isinstance(features, Mapping):
      placeholders = {name: _placeholder(value, name, default_batch_size)
                      for name, value in features.items()}
      return ServingInputReceiver(placeholders, dict(placeholders))
    placeholder = _placeholder(features, SINGLE_RECEIVER_NAME, default_batch_size)
    return ServingInputReceiver(placeholder, {SINGLE_RECEIVER_NAME: placeholder})

  return serving_input_receiver_fn
