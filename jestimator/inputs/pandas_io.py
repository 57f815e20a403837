"""`pandas_input_fn`: tf.estimator's input_fn over a DataFrame, built on numpy_input_fn."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from jestimator.inputs.numpy_io import numpy_input_fn
from jestimator.tf_import import tf


def _values(column) -> Any:
  """A column's values: a numpy array, or a RaggedTensor for a column of lists."""
  values = np.asarray(column.to_numpy())
  if values.dtype != object:
    return values
  is_list = [isinstance(v, (list, tuple, np.ndarray)) for v in values]
  if not any(is_list):
    return values
  if not all(is_list):
    raise ValueError(f'pandas_input_fn: column {column.name!r} mixes lists and scalars; '
                     'give every row a list (empty for none).')
  return tf.ragged.constant([list(v) for v in values])


def pandas_input_fn(x, y: Any = None, batch_size: int = 128, num_epochs: int | None = 1,
                    shuffle: bool | None = None, queue_capacity: int = 1000,
                    num_threads: int = 1, target_column: str = 'target',
                    seed: int | None = None) -> Callable:
  """An input_fn yielding `({column: values}, labels)` batches from a DataFrame.

  Args:
    x: a pandas DataFrame; each column becomes a feature `[batch]`, and a
      column of lists (or arrays) a variable-length `tf.RaggedTensor`
      `[batch, None]` feature, e.g. for feature columns.
    y: a Series (labels `[batch]`) or DataFrame (a dict of label columns), or None.
    target_column: the feature name a Series `y` must not collide with.
    Other arguments as `numpy_input_fn` (shuffle must be given explicitly).
  """
  import pandas as pd  # optional dependency, imported only when used

  if not isinstance(x, pd.DataFrame):
    raise TypeError(f'pandas_input_fn: x must be a DataFrame, got {type(x).__name__}.')
  if y is not None:
    if target_column in x.columns:
      raise ValueError(f'pandas_input_fn: target_column {target_column!r} is also a column of x.')
    if not x.index.equals(y.index):
      raise ValueError('pandas_input_fn: x and y must have the same index.')
  features = {str(c): _values(x[c]) for c in x.columns}
  labels = None
  if isinstance(y, pd.DataFrame):
    labels = {str(c): np.asarray(y[c].to_numpy()) for c in y.columns}
  elif y is not None:
    labels = np.asarray(y.to_numpy())
  return numpy_input_fn(features, labels, batch_size=batch_size, num_epochs=num_epochs,
                        shuffle=shuffle, queue_capacity=queue_capacity,
                        num_threads=num_threads, seed=seed)
