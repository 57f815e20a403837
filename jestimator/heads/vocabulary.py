"""Class names of classification heads: the host side of `label_vocabulary`.

JAX has no strings, so on device a classification head works with class ids
(a label vocabulary maps each string to its *position* in the list, as
tf.estimator does) and its `classes` predictions are ids too. The strings live
here, on the host: `classes_from_ids` turns ids from `predict` back into the
vocabulary's names (or `b'0'`, `b'1'`, ... without a vocabulary), and
`ids_from_classes` is the lookup an input pipeline applies to string labels.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class ClassVocabulary:
  """The names of `n_classes` classes: `label_vocabulary`, or `str(id)`.

  Args:
    n_classes: the number of classes.
    label_vocabulary: None, or a list of `n_classes` distinct strings; the
      class id of a string is its position in the list.
    head: the head's description, for error messages.
  """

  def __init__(self, n_classes: int, label_vocabulary: Sequence[str] | None, head: str):
    if label_vocabulary is not None:
      if isinstance(label_vocabulary, (str, bytes)) or not isinstance(
          label_vocabulary, (list, tuple)):
        raise ValueError(f'{head}: label_vocabulary should be a list or a tuple. '
                         f'Given type: {type(label_vocabulary).__name__}')
      label_vocabulary = tuple(_text(v) for v in label_vocabulary)
      if len(label_vocabulary) != n_classes:
        raise ValueError(f'{head}: label_vocabulary has {len(label_vocabulary)} entries but '
                         f'there are {n_classes} classes: {list(label_vocabulary)}.')
      if len(set(label_vocabulary)) != n_classes:
        raise ValueError(f'{head}: label_vocabulary has duplicates: {list(label_vocabulary)}.')
    self.n_classes = n_classes
    self.label_vocabulary = label_vocabulary
    self._head = head
    names = label_vocabulary or tuple(str(i) for i in range(n_classes))
    self.names = np.array([n.encode('utf-8') for n in names], dtype=object)

  def classes_from_ids(self, ids: Any) -> np.ndarray:
    """Class names (bytes, like tf.estimator's `classes`) for integer `ids`, any shape."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
      raise ValueError(f'{self._head}: class ids must be integers, got dtype {ids.dtype}.')
    bad = (ids < 0) | (ids >= self.n_classes)
    if bad.any():
      raise ValueError(f'{self._head}: class id {ids[bad].flat[0]} is out of range '
                       f'[0, {self.n_classes}).')
    return self.names[ids]

  def ids_from_classes(self, classes: Any) -> np.ndarray:
    """int32 class ids for string (or bytes) labels; an unknown label is an error."""
    table = {n.decode('utf-8'): i for i, n in enumerate(self.names)}
    classes = np.asarray(classes, dtype=object)
    out = np.empty(classes.shape, np.int32)
    for index, value in np.ndenumerate(classes):
      key = _text(value)
      if key not in table:
        raise ValueError(f'{self._head}: label {key!r} is not in the label vocabulary '
                         f'{list(table)}.')
      out[index] = table[key]
    return out


def _text(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)
