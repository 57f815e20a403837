"""A MultiLabelHead's sparse labels made multi-hot on the host (tf.estimator's SparseTensor labels).

`tf.io.parse_example` with a `VarLenFeature` gives each example's labels as
a `tf.SparseTensor` `[batch, k]`: class ids, or names with the head's
`label_vocabulary`. tf.estimator's MultiLabelHead took that and made it
multi-hot with `tf.sparse.to_indicator`. JAX takes dense arrays only, so the
same happens here inside the tf.data pipeline, giving int32 `[batch,
n_classes]` of 0/1: a class listed twice counts once, and the sparse column
index plays no part (a repeated index is fine). An id outside `[0,
n_classes)` or a name outside the vocabulary (the empty string included)
stops the input with an error naming the head and the value. Dense labels
pass through unchanged: they are multi-hot already (or, with a vocabulary,
`LabelLookup`'s padded name lists).
"""

from __future__ import annotations

from typing import Any, Mapping

from jestimator.inputs.host_transform import HostTransform
from jestimator.tf_import import maybe_tf, tf


def is_sparse(labels: Any) -> bool:
  tf_module = maybe_tf()  # not imported: numpy labels, never sparse
  return tf_module is not None and isinstance(labels, (tf_module.SparseTensor,
                                                       tf_module.RaggedTensor))


def multi_hot_from_sparse(labels: tf.SparseTensor | tf.RaggedTensor, n_classes: int, head: str,
                          table: tf.lookup.StaticHashTable | None = None,
                          vocabulary: tuple[str, ...] = ()) -> tf.Tensor:
  """int32 multi-hot `[batch, n_classes]` from sparse ids or names `[batch, k]` (TF ops).

  Args:
    labels: integer class ids, or strings looked up in `table`.
    n_classes: the head's number of classes.
    head: the head's description, for error messages.
    table: name -> id (-1 when unknown); needed for string labels.
    vocabulary: the names, for the unknown-label message.
  """
  if isinstance(labels, tf.RaggedTensor):
    labels = labels.to_sparse()
  if labels.shape.rank is not None and labels.shape.rank < 2:
    raise ValueError(f'{head}: SparseTensor labels must be [batch, k] (one list of labels per '
                     f'example), got rank {labels.shape.rank}.')
  if labels.dtype == tf.string:
    if table is None:
      raise ValueError(f'{head}: labels are strings but the head has no label_vocabulary; '
                       'give label_vocabulary, or class ids.')
    ids = table.lookup(labels.values)
    bad = ids < 0
    check = tf.debugging.Assert(~tf.reduce_any(bad), [
        f'{head}: label not in label_vocabulary', tf.constant(str(list(vocabulary))),
        'unknown labels:', tf.boolean_mask(labels.values, bad)], summarize=5)
  elif labels.dtype.is_integer:
    ids = tf.cast(labels.values, tf.int64)
    bad = (ids < 0) | (ids >= n_classes)
    check = tf.debugging.Assert(~tf.reduce_any(bad), [
        f'{head}: labels must be an integer SparseTensor with values in [0, {n_classes}); '
        'invalid labels:', tf.boolean_mask(ids, bad)], summarize=5)
  else:
    raise ValueError(f'{head}: SparseTensor labels must hold integer class ids (or strings '
                     f'with label_vocabulary), got {labels.dtype.name}.')
  with tf.control_dependencies([check]):
    ids = tf.SparseTensor(labels.indices, tf.identity(ids), labels.dense_shape)
  hot = tf.cast(tf.sparse.to_indicator(ids, n_classes), tf.int32)
  if labels.shape.rank is not None:
    hot = tf.ensure_shape(hot, labels.shape[:-1].concatenate([n_classes]))
  return hot


class MultiHotLabels(HostTransform):
  """A MultiLabelHead's sparse class ids -> multi-hot, in tf.data (see the module docstring).

  `host_transforms(head)` installs it for a MultiLabelHead without a
  label_vocabulary (with one, `LabelLookup` does this and the names).

  Args:
    head: the MultiLabelHead.
    label_key: where its labels are when labels are a dict (a MultiHead's are
      keyed by head name); None for a bare tensor.
  """

  def __init__(self, head: Any, label_key: str | None = None):
    self._n_classes = head.n_classes
    self._head = head._describe()  # pylint: disable=protected-access
    self._label_key = label_key

  def transform(self, features, labels, mode):
    if labels is None:
      return features, labels
    if self._label_key is None:
      return features, self._multi_hot(labels)
    if not isinstance(labels, Mapping) or self._label_key not in labels:
      return features, labels  # the MultiHead's own check names what is missing
      return features, labels
    labels = dict(labels)
    labels[self._label_key] = self._multi_hot(labels[self._label_key])
    return features, labels

  def _multi_hot(self, labels: Any) -> Any:
    if not is_sparse(labels):
      return labels
    return multi_hot_from_sparse(labels, self._n_classes, self._head)
