"""`numpy_input_fn`: tf.estimator's input_fn over in-memory numpy arrays, on tf.data.

The pipeline reads by index, a batch at a time: a dataset of batch start
positions, each mapped to the batch's example indices (shuffled by a
stateless per-epoch permutation, `RandomIndexShuffle`) and one `tf.gather`
per array. So a batch costs a few vectorized ops rather than one tf.data
element per example, the shuffle is a full permutation of every epoch (not a
window of `queue_capacity` examples), and the iterator's checkpoint is its
position alone (tf.data's symbolic checkpointing): a few hundred bytes
however large the arrays, where a shuffle buffer saves every buffered example.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from jestimator.tf_import import tf


def _shape(array: Any) -> tuple:
  return tuple(array.shape) if isinstance(array, tf.RaggedTensor) else np.shape(array)


def _rows(array: Any) -> int | None:
  return _shape(array)[0] if _shape(array) else None


def _length(tree: Any, what: str) -> int:
  arrays = list(tree.values()) if isinstance(tree, dict) else [tree]
  lengths = {_rows(a) for a in arrays}
  if None in lengths or len(lengths) != 1:
    shapes = {k: _shape(v) for k, v in tree.items()} if isinstance(tree, dict) else _shape(tree)
    raise ValueError(f'numpy_input_fn: every array in {what} needs the same first dimension; '
                     f'got shapes {shapes}.')
  return lengths.pop()


def _permute(position: tf.Tensor, epoch: tf.Tensor, seed: int, stream: int,
              rows: int) -> tf.Tensor:
  """Where each `position` in `[0, rows)` goes in epoch `epoch`'s permutation, `[b]` int64.

  Stateless: the permutation is a function of (seed, epoch, stream), so an
  iterator's position is all a checkpoint needs. `tf.random.experimental.
  index_shuffle` pads a per-element `[b, 2]` seed along the wrong axis (TF
  2.21), so this calls its op with the full `[b, 3]` seed.
  """
  key = tf.stack([tf.fill(tf.shape(position), tf.constant(seed, tf.int64)), epoch,
                  tf.fill(tf.shape(position), tf.constant(stream, tf.int64))], axis=1)
  return tf.raw_ops.RandomIndexShuffle(index=position, seed=key, rounds=4,
                                       max_index=tf.constant(rows - 1, tf.int64))


def numpy_input_fn(x: Any, y: Any = None, batch_size: int = 128, num_epochs: int | None = 1,
                   shuffle: bool | None = None, queue_capacity: int = 1000,
                   num_threads: int = 1, seed: int | None = None) -> Callable:
  """An input_fn yielding `(x, y)` batches (features `x` alone if `y` is None).

  Args:
    x: a dict of arrays `[n, ...]` (or one array), the features. Object
      arrays of str/bytes become string features; a `tf.RaggedTensor`
      `[n, None]` is a variable-length feature (e.g. for feature columns).
    y: an array or dict of arrays `[n, ...]`, the labels, or None.
    batch_size: examples per batch; the last batch of a finite run may be
      smaller (batches run on across epochs, as `repeat().batch()` does).
    num_epochs: passes over the data; None repeats forever.
    shuffle: required, as in tf.estimator: whether to visit each epoch in its
      own random order (a full permutation: every example once per epoch).
    queue_capacity, num_threads: accepted for tf.estimator compatibility and
      unused: there is no shuffle buffer, and the pipeline sizes its own
      parallelism (`tf.data.AUTOTUNE`).
    seed: shuffle seed; default the RunConfig seed (else one drawn here), so
      runs are reproducible.

  With several processes each reads every num_input_pipelines-th example
  (as `Dataset.shard`), shuffled within its share, and `batch_size` is per
  process.

  The dataset checkpoints symbolically, an option that transformations
  chained after it inherit: stateless ones (`map`, `batch`) resume exactly,
  but a buffer such as `.shuffle()` chained after it is not saved (set
  `experimental_symbolic_checkpoint = False` in its options if you need one).
  """
  del queue_capacity, num_threads
  if not isinstance(shuffle, bool):
    raise ValueError('numpy_input_fn: shuffle must be given explicitly as a bool, '
                     f'got {shuffle!r}.')
  if batch_size <= 0:
    raise ValueError(f'numpy_input_fn: batch_size must be positive, got {batch_size}.')
  if num_epochs is not None and num_epochs <= 0:
    raise ValueError(f'numpy_input_fn: num_epochs must be positive or None, got {num_epochs}.')
  n = _length(x, 'x')
  if y is not None and _length(y, 'y') != n:
    raise ValueError(f'numpy_input_fn: x has {n} examples but y has {_length(y, "y")}.')
  x = dict(x) if isinstance(x, dict) else x
  drawn_seed = int(np.random.default_rng().integers(2 ** 31))  # without seed and config.seed

  def input_fn(config=None, input_context=None):
    pipelines, pipeline_id = ((input_context.num_input_pipelines, input_context.input_pipeline_id)
                              if input_context is not None else (1, 0))
    rows = len(range(pipeline_id, n, pipelines))  # this process's share of the examples
    # Examples this process reads in the run; None: forever (an empty share stays empty).
    total = rows * num_epochs if num_epochs else (None if rows else 0)
    key = seed if seed is not None else getattr(config, 'seed', None)
    key = drawn_seed if key is None else key
    data = tf.nest.map_structure(
        lambda a: a if isinstance(a, tf.RaggedTensor) else tf.constant(a),
        (x, y) if y is not None else x)

    def gather_batch(start):
      end = start + batch_size if total is None else tf.minimum(start + batch_size, total)
      index = tf.range(start, end)  # positions in the whole run, epoch after epoch
      epoch, position = index // rows, index % rows
      if shuffle:
        position = _permute(position, epoch, key, pipeline_id, rows)
      example = pipeline_id + pipelines * position
      return tf.nest.map_structure(lambda a: tf.gather(a, example), data)

    starts = (tf.data.Dataset.counter(0, batch_size) if total is None
              else tf.data.Dataset.range(0, total, batch_size))
    ds = starts.map(tf.autograph.experimental.do_not_convert(gather_batch),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_symbolic_checkpoint = True  # checkpoint positions, not buffers
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

  return input_fn
