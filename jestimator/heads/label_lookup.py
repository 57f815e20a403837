"""`LabelLookup`: a head's label vocabulary applied on the host, in tf.data.

JAX has no strings. Given to the Estimator (`input_transforms=[head.host_transform()]`),
this maps string labels to their position in the head's `label_vocabulary`
inside the input pipeline (a TF hash table, so it runs in `dataset.map`), and
maps the `classes` / `all_classes` predictions back to names after `predict`.
An unknown label stops the input with an error that names it (tf.estimator
gave no id and failed later; a silent -1 would train on garbage).
A MultiLabelHead's sparse labels (ids or names) become multi-hot here too,
with or without a vocabulary (`sparse_labels`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jestimator.heads import sparse_labels
from jestimator.inputs.host_transform import HostTransform
from jestimator.tf_import import tf

_CLASS_KEYS = ('classes', 'all_classes')


class LabelLookup(HostTransform):
  """String labels -> class ids (host), class ids -> names (predictions).

  For a MultiLabelHead, labels are `[batch, k]` names padded with `b''`, or a
  `tf.SparseTensor` of names or ids, and become multi-hot `[batch, n_classes]`.

  Args:
    head: a classification head (`label_vocabulary` and `classes_from_ids`).
    label_key: where the head's labels are when labels are a dict (a
      MultiHead's labels are keyed by head name); None for a bare array.
    prediction_prefix: prefix of the head's prediction keys ('name/' in a MultiHead).
  """

  def __init__(self, head: Any, label_key: str | None = None, prediction_prefix: str = ''):
    if head.label_vocabulary is None:
      raise ValueError(f'{head!r} has no label_vocabulary: labels are class ids already.')
    self._head = head
    self._vocabulary = tuple(head.label_vocabulary)
    self._label_key = label_key
    self._prefix = prediction_prefix
    # A multi-label head takes lists of names, padded with b'' -> multi-hot.
    self._multi_hot = type(head).__name__ == 'MultiLabelHead'
    # Built once, outside the map function: a table created inside it would be
    # a stateful op that tf.data refuses to checkpoint with the iterator.
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(self._vocabulary),
                                            tf.range(len(self._vocabulary), dtype=tf.int32)),
        default_value=-1)

  def transform(self, features, labels, mode):
    if labels is None:
      return features, labels
    if self._label_key is None:
      return features, self._lookup(labels)
    labels = dict(labels)
    labels[self._label_key] = self._lookup(labels[self._label_key])
    return features, labels

  def _lookup(self, labels: tf.Tensor) -> tf.Tensor:
    if self._multi_hot and sparse_labels.is_sparse(labels):
      return sparse_labels.multi_hot_from_sparse(
          labels, len(self._vocabulary), self._head._describe(),  # pylint: disable=protected-access
          self._table, self._vocabulary)
    if labels.dtype != tf.string:
      return labels
    ids = self._table.lookup(labels)
    known = (ids >= 0) | (labels == b'') if self._multi_hot else ids >= 0
    unknown = tf.boolean_mask(labels, ~known)
    check = tf.debugging.Assert(tf.size(unknown) == 0, [
        f'{self._head._describe()}: label not in label_vocabulary',  # pylint: disable=protected-access
        tf.constant(str(list(self._vocabulary))),
        'unknown labels:', unknown], summarize=5)
    with tf.control_dependencies([check]):
      ids = tf.identity(ids)
    if self._multi_hot:  # [batch, k] names -> [batch, n_classes] 0/1; -1 pads one-hot to 0
      return tf.reduce_max(tf.one_hot(ids, len(self._vocabulary), dtype=tf.int32), axis=-2)
    return ids

  def postprocess(self, predictions):
    if not isinstance(predictions, dict):
      return predictions
    out = dict(predictions)
    for key in _CLASS_KEYS:
      if self._prefix + key in out:
        out[self._prefix + key] = self._head.classes_from_ids(np.asarray(out[self._prefix + key]))
    return out


def host_transforms(head: Any) -> list[HostTransform]:
  """The host transforms a head (or MultiHead) needs: one per head with a vocabulary
  (`LabelLookup`) or a MultiLabelHead's sparse labels (`sparse_labels.MultiHotLabels`)."""
  if hasattr(head, 'heads'):
    found = (_label_transform(h, h.name, f'{h.name}/') for h in head.heads)
    return [t for t in found if t is not None]
  transform = _label_transform(head)
  return [] if transform is None else [transform]


def _label_transform(head: Any, label_key: str | None = None,
                     prediction_prefix: str = '') -> HostTransform | None:
  if getattr(head, 'label_vocabulary', None) is not None:
    return LabelLookup(head, label_key, prediction_prefix)
  if type(head).__name__ == 'MultiLabelHead':
    return sparse_labels.MultiHotLabels(head, label_key)
  if type(head).__name__ in ('MultiClassHead', 'BinaryClassHead'):
    return _DenseLabels(head, label_key)
  return None


class _DenseLabels(HostTransform):
  """Names the head when its labels arrive sparse (only a MultiLabelHead takes those).

  The check runs when tf.data traces the map: no per-batch work beyond the map.
  """

  def __init__(self, head: Any, label_key: str | None):
    self._head, self._label_key = head, label_key

  def transform(self, features, labels, mode):
    part = labels if labels is None or self._label_key is None else labels.get(self._label_key)
    if sparse_labels.is_sparse(part):
      raise TypeError(f'{self._head._describe()} takes dense labels [batch] or [batch, 1]; got '  # pylint: disable=protected-access
                      f'a {type(part).__name__} (only a MultiLabelHead takes sparse labels): '
                      'densify them in the input_fn (tf.sparse.to_dense).')
    return features, labels
