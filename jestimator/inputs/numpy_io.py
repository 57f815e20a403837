"""`numpy_input_fn`: tf.estimator's input_fn over in-memory numpy arrays, on tf.data."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import tensorflow as tf


def _length(tree: Any, what: str) -> int:
  arrays = list(tree.values()) if isinstance(tree, dict) else [tree]
  lengths = {np.shape(a)[0] if np.ndim(a) else None for a in arrays}
  if None in lengths or len(lengths) != 1:
    shapes = {k: np.shape(v) for k, v in tree.items()} if isinstance(tree, dict) else np.shape(tree)
    raise ValueError(f'numpy_input_fn: every array in {what} needs the same first dimension; '
                     f'got shapes {shapes}.')
  return lengths.pop()


def numpy_input_fn(x: Any, y: Any = None, batch_size: int = 128, num_epochs: int | None = 1,
                   shuffle: bool | None = None, queue_capacity: int = 1000,
                   num_threads: int = 1, seed: int | None = None) -> Callable:
  """An input_fn yielding `(x, y)` batches (features `x` alone if `y` is None).

  Args:
    x: a dict of arrays `[n, ...]` (or one array), the features.
    y: an array or dict of arrays `[n, ...]`, the labels, or None.
    batch_size: examples per batch; the last batch of a finite run may be smaller.
    num_epochs: passes over the data; None repeats forever.
    shuffle: required, as in tf.estimator: whether to shuffle (within a buffer
      of `queue_capacity` examples, reshuffled each epoch).
    queue_capacity: the shuffle buffer size.
    num_threads: parallelism of the host pipeline.
    seed: shuffle seed; default the RunConfig seed, so runs are reproducible.

  With several processes each reads every num_input_pipelines-th example
  (`Dataset.shard`), and `batch_size` is per process.
  """
  if not isinstance(shuffle, bool):
    raise ValueError(f'numpy_input_fn: shuffle must be given explicitly as a bool, got {shuffle!r}.')
  if batch_size <= 0:
    raise ValueError(f'numpy_input_fn: batch_size must be positive, got {batch_size}.')
  n = _length(x, 'x')
  if y is not None and _length(y, 'y') != n:
    raise ValueError(f'numpy_input_fn: x has {n} examples but y has {_length(y, "y")}.')
  x = dict(x) if isinstance(x, dict) else x

  def input_fn(config=None, input_context=None):
    data = (x, y) if y is not None else x
    ds = tf.data.Dataset.from_tensor_slices(data)
    if input_context is not None and input_context.num_input_pipelines > 1:
      ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle:
      s = seed if seed is not None else getattr(config, 'seed', None)
      ds = ds.shuffle(queue_capacity, seed=s, reshuffle_each_iteration=True)
    ds = ds.repeat(num_epochs).batch(batch_size, num_parallel_calls=num_threads)
    return ds.prefetch(tf.data.AUTOTUNE)

  return input_fn
