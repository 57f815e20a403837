"""What an input_fn may return, normalised to a dataset or an iterable.

tf.estimator took a `tf.data.Dataset`, or a `(features, labels)` tuple (or a
features dict) of tensors that the graph re-ran every step. Here:

  tf.data.Dataset            as is
  tensors / numpy arrays     one batch: `Dataset.from_tensors`, repeated in
                             TRAIN (as the graph re-ran the same constants),
                             run once in EVAL and PREDICT
  grain MapDataset /         grain batches (position: grain's own state; an
  IterDataset / DataLoader   optional dependency, `inputs/grain_io.py`)
  any other iterable         Python batches (position: a count, replayed)
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import numpy as np

from jestimator.inputs.grain_io import is_grain
from jestimator.inputs.host_transform import HostTransform, apply_to_batch, apply_to_dataset
from jestimator.spec import ModeKeys
from jestimator.tf_import import is_dataset, maybe_tf, tf
from jestimator.tree_paths import path_name


def _tensor_types() -> tuple[type, ...]:
  """numpy arrays, and TF's tensors once TensorFlow is imported (before, nothing is one)."""
  tf_module = maybe_tf()
  if tf_module is None:
    return (np.ndarray,)
  return (tf_module.Tensor, np.ndarray, tf_module.SparseTensor, tf_module.RaggedTensor)


def _is_batch_leaf(x) -> bool:
  return isinstance(x, _tensor_types()) or np.isscalar(x)


def _is_tensor_tree(x) -> bool:
  """A dict of tensors/arrays, a tensor/array, or a (features, labels) tuple of them."""
  if isinstance(x, dict):
    return bool(x) and all(_is_tensor_tree(v) or _is_batch_leaf(v) for v in x.values())
  if isinstance(x, tuple) and len(x) == 2:
    return all(_is_tensor_tree(v) or _is_batch_leaf(v) for v in x)
  return isinstance(x, _tensor_types())


def check_element_spec(dataset: tf.data.Dataset) -> None:
  """Rejects sparse/ragged components (after the host transforms), naming them."""
  element = dataset.element_spec
  pair = isinstance(element, tuple) and len(element) == 2
  flat = jax.tree_util.tree_flatten_with_path(
      element, is_leaf=lambda x: isinstance(x, tf.TypeSpec))[0]
  for path, spec in flat:
    if isinstance(spec, (tf.SparseTensorSpec, tf.RaggedTensorSpec)):
      is_label = pair and path[0].idx == 1  # '1/...': the labels of (features, labels)
      hint = (' (a MultiLabelHead\'s sparse labels: input_transforms='
              'je.heads.host_transforms(head) makes them multi-hot)' if is_label else
              ', or declare it with a feature column that takes sparse input')
      name = path_name(path)
      if pair:  # (features, labels): name the part, not its index
        name = ('labels' if is_label else 'features') + name[1:]
      raise TypeError(f'input {name!r} is a {type(spec).__name__[:-4]}: not '
                      'supported here; densify it in the input_fn (e.g. tf.sparse.to_dense)'
                      f'{hint}.')


def normalize(returned: Any, mode: str) -> Any:
  """The input_fn's return value as a `tf.data.Dataset`, a grain object or an iterable."""
  if is_dataset(returned):
    return returned
  if (isinstance(returned, tuple) and len(returned) != 2 and returned and
      all(_is_tensor_tree(v) or _is_batch_leaf(v) for v in returned)):
    raise TypeError(f'input_fn returned a tuple of {len(returned)} tensors/arrays; expected '
                    '(features, labels) or features alone (a weight goes into features, '
                    'named by the head\'s weight_column).')
  if _is_tensor_tree(returned):
    dataset = tf.data.Dataset.from_tensors(returned)
    return dataset.repeat() if mode == ModeKeys.TRAIN else dataset
  if is_grain(returned) or hasattr(returned, '__iter__'):
    return returned
  raise TypeError('input_fn must return a tf.data.Dataset, a (features, labels) tuple of '
                  'tensors or arrays, a grain dataset, or an iterable of numpy batches; got '
                  f'{type(returned).__name__}.')


def apply_transforms(source: Any, transforms: Sequence[HostTransform], mode: str) -> Any:
  """The Estimator's host transforms on every batch: inside the tf.data graph, as a
  grain `map`, or eagerly on each batch of a Python iterable."""
  if is_dataset(source):
    return apply_to_dataset(source, transforms, mode)
  fn = functools.partial(apply_to_batch, transforms=transforms, mode=mode)
  if is_grain(source):
    if not hasattr(source, 'map'):
      raise TypeError(f'input_transforms / feature_columns on a grain {type(source).__name__}: '
                      'return a grain MapDataset or IterDataset, whose map() can apply them.')
    return source.map(fn)
  return map(fn, source)
