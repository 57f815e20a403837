"""`tfds_input_fn`: an input_fn over a TensorFlow Datasets builder, sharded per process.

Sharding is by example, not by file: process `i` of `n` reads
`tfds.even_splits(split, n, drop_remainder=False)[i]`, so the shares are
disjoint, together cover the split, differ in size by at most one example,
and work for datasets stored in a single file (most small ones, e.g. mnist).
(`tfds.ReadConfig(input_context=...)` shards by file instead, and fails when
there are fewer files than processes; `tfds.split_for_jax_process` does what
this does but reads the process index from JAX's globals, where here it comes
from the Estimator's `InputContext`.)

TRAIN shuffles the files and then a buffer of examples, both seeded, and
repeats; EVAL and PREDICT read every example of the process's share exactly
once, in order (the Estimator pads and masks the last batch).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from jestimator.spec import ModeKeys
from jestimator.tf_import import tf

_DEFAULT_SHUFFLE_BUFFER = 10_000


def _mocked(builder: Any) -> bool:
  """Whether `tfds.testing.mock_data` is active: it serves fake examples to builders
  that are not prepared (it replaces `download_and_prepare` with a no-op)."""
  method = getattr(type(builder), 'download_and_prepare', None)
  return getattr(method, '__name__', '') == 'mock_download_and_prepare'


def _builder(name_or_builder: Any, data_dir: str | None) -> Any:
  """The `tfds.core.DatasetBuilder`; raises at once if its data is not prepared.

  Never downloads: `tfds.load` without a network retries DNS for minutes.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if isinstance(name_or_builder, str):
    builder = tfds.builder(name_or_builder, data_dir=data_dir)
  elif data_dir is not None:
    raise ValueError('tfds_input_fn: data_dir applies to a dataset name; a builder '
                     'already has its own (pass data_dir when creating it).')
  else:
    builder = name_or_builder
  if not builder.is_prepared() and not _mocked(builder):
    raise FileNotFoundError(
        f'tfds_input_fn: dataset {builder.info.full_name!r} is not prepared in data_dir '
        f'{builder.data_dir!r}. Prepare it first, where there is a network (or from local '
        f'files), with tfds.builder({builder.name!r}, data_dir=...).download_and_prepare(); '
        'this input_fn never downloads.')
  return builder


def _to_pair(example: Any, as_supervised: bool, features_key: Any,
             label_key: str | None) -> tuple[Any, Any]:
  """One example as `(features dict, labels)`."""
  if as_supervised:
    image, label = example
    return {'x': image}, label
  if label_key is not None and label_key not in example:
    raise KeyError(f'tfds_input_fn: label_key {label_key!r} is not a feature of the '
                   f'dataset; it has {sorted(example)}.')
  if features_key is None:
    keys = [k for k in example if k != label_key]
  else:
    keys = [features_key] if isinstance(features_key, str) else list(features_key)
  missing = [k for k in keys if k not in example]
  if missing:
    raise KeyError(f'tfds_input_fn: features_key {missing} not in the dataset\'s features '
                   f'{sorted(example)}.')
  labels = example[label_key] if label_key is not None else None
  return {k: example[k] for k in keys}, labels


def tfds_input_fn(name_or_builder: Any, split: str, batch_size: int, *,
                  as_supervised: bool = True, features_key: str | Sequence[str] | None = None,
                  label_key: str | None = None, shuffle_files: bool | None = None,
                  shuffle_buffer: int | None = None, num_epochs: int | None = None,
                  data_dir: str | None = None, decoders: Any = None,
                  preprocess: Callable[[Any, Any], tuple[Any, Any]] | None = None,
                  drop_remainder: bool | None = None, seed: int = 0) -> Callable:
  """An input_fn yielding `(features, labels)` batches of a TFDS split.

  Args:
    name_or_builder: a registered dataset name ('mnist', 'mnist:3.0.1') or a
      `tfds.core.DatasetBuilder`. Its data must already be prepared
      (`download_and_prepare`); a missing dataset raises FileNotFoundError at
      once, naming it and data_dir. Nothing is downloaded.
    split: the split to read, with tfds slicing ('train', 'train[:90%]').
    batch_size: the GLOBAL batch: each of the `n` processes yields batches of
      `batch_size // n` examples (`InputContext.get_per_process_batch_size`;
      it must divide).
    as_supervised: read the builder's `(input, label)` pairs (its
      `supervised_keys`) as features `{'x': input}` and labels `label`.
    features_key, label_key: with `as_supervised=False`, the labels are
      `example[label_key]` (None: no labels, for PREDICT), and the features
      the dict of `features_key` (a name or names; None: every key but the
      label).
    shuffle_files: TRAIN only: shuffle the order of the files (default True).
    shuffle_buffer: TRAIN only: examples in the shuffle buffer (default
      10,000; 0 or 1: no example shuffle).
    num_epochs: TRAIN only: passes over the data; None repeats forever.
    data_dir: where the prepared data is (with a name; default tfds's).
    decoders: passed to `as_dataset` (e.g. `{'image': tfds.decode.SkipDecoding()}`).
    preprocess: `(features, labels) -> (features, labels)` on each example,
      in the tf.data graph, before batching (labels None where there are none).
    drop_remainder: TRAIN only (default True: one static batch shape).
      EVAL and PREDICT always keep the last, smaller batch.
    seed: seeds the file and buffer shuffles: the same seed gives the same
      order, so a run restored from its checkpoint (which saves the iterator,
      shuffle buffer included) goes on as an uninterrupted one.

  EVAL and PREDICT read each example of the split exactly once, across all
  processes together.
  """
  if as_supervised and (features_key is not None or label_key is not None):
    raise ValueError('tfds_input_fn: features_key / label_key pick from dict examples; '
                     'pass as_supervised=False with them.')
  if batch_size <= 0:
    raise ValueError(f'tfds_input_fn: batch_size must be positive, got {batch_size}.')
  if num_epochs is not None and num_epochs <= 0:
    raise ValueError(f'tfds_input_fn: num_epochs must be positive or None, got {num_epochs}.')
  if shuffle_buffer is not None and shuffle_buffer < 0:
    raise ValueError(f'tfds_input_fn: shuffle_buffer must be >= 0, got {shuffle_buffer}.')

  def input_fn(mode=ModeKeys.TRAIN, input_context=None):
    """The dataset of this process's share for `mode` (called alone: TRAIN, one process)."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    builder = _builder(name_or_builder, data_dir)
    pipelines, pipeline_id = ((input_context.num_input_pipelines,
                               input_context.input_pipeline_id)
                              if input_context is not None else (1, 0))
    local_batch = (input_context.get_per_process_batch_size(batch_size)
                   if input_context is not None else batch_size)
    share = (split if pipelines == 1 else
             tfds.even_splits(split, n=pipelines, drop_remainder=False)[pipeline_id])
    train = mode == ModeKeys.TRAIN
    ds = builder.as_dataset(
        split=share, as_supervised=as_supervised, decoders=decoders,
        shuffle_files=bool(train and (shuffle_files is None or shuffle_files)),
        read_config=tfds.ReadConfig(shuffle_seed=seed))

    def to_example(*example):
      features, labels = _to_pair(example if as_supervised else example[0], as_supervised,
                                  features_key, label_key)
      if preprocess is not None:
        features, labels = preprocess(features, labels)
      return features if labels is None else (features, labels)  # no labels: features alone

    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if train:
      buffer = _DEFAULT_SHUFFLE_BUFFER if shuffle_buffer is None else shuffle_buffer
      if buffer > 1:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
      ds = ds.repeat(num_epochs)
    ds = ds.batch(local_batch, drop_remainder=bool(train and drop_remainder is not False),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)

  return input_fn
