"""The host side of input: one input_fn's batches, with a position that can be saved.

`InputPipeline` wraps what `sources.normalize` made of an input_fn's return
value and hands out host (numpy) batches in *chunks*: `take(n)` gives `n`
consecutive batches, either stacked `[n, B, ...]` (one dispatch of n steps)
or as single batches. With `stack=K` a tf.data input stacks K batches inside
its own graph (`dataset.batch(K)`), so the host pays one `next()` per K
steps; a stacked chunk is a span of rows of one element (no copy), so a log
or save step inside an element splits it in two. Batches handed back (or
restored) are served one by one first.

The position is saved in one of three ways (`kind`):

  tf.data   the iterator's own state (`SerializeIterator`: shuffle buffers,
            RNG state), captured on the caller's thread and written later,
            plus the not yet consumed rest of the current stacked element
  replay    a count of batches, pulled and dropped on restore: for iterables
            and for tf.data pipelines whose state cannot be serialized
            (from_generator, py_function)
  grain     grain's own iterator state (a few bytes of JSON; `inputs/grain_io.py`),
            set back on restore: nothing is re-read

Every saved position carries the input's fingerprint; `restore` moves only an
input with the same fingerprint.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any, Callable

import jax
import numpy as np

from jestimator.inputs import fingerprint as fp
from jestimator.inputs import grain_io
from jestimator.inputs import tf_next
from jestimator.inputs.sources import check_element_spec, is_grain
from jestimator.reporting import logger
from jestimator.spec import ModeKeys
from jestimator.tf_import import is_dataset, tf


_WARNED: set[str] = set()


def _to_numpy(x):
  return x._numpy() if hasattr(x, '_numpy') else np.asarray(x)  # pylint: disable=protected-access


def _check_numeric(tree, what: str) -> None:
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = jax.tree_util.keystr(path)
    subject, be = (f'{what} {key}', 'is') if key else (f'{what}s', 'are')  # 'labels are'
    if not hasattr(leaf, 'dtype'):
      raise TypeError(f'{subject} {be} a {type(leaf).__name__}, not an array: input_fn '
                      'batches must be numpy arrays or tensors.')
    if leaf.dtype.kind in 'OSU':
      raise TypeError(f'{subject} hold{"s" if be == "is" else ""} strings ({leaf.dtype}); JAX '
                      'takes numbers only. Map strings to ids in the input_fn (e.g. a tf '
                      'lookup table).')
    if leaf.ndim == 0:
      raise ValueError(f'{subject} {be} a scalar; every feature and label needs a leading '
                       'batch dimension (batch the dataset).')


def _assertion(message: str) -> str:
  """A tf.debugging.Assert's own words, without tf.data's graph and node names."""
  found = re.search(r'assertion failed: (.*?)(?:\s*\[\[\{\{node|\s*\[Op:|\n|$)', message, re.S)
  if found is None:
    return message
  return found.group(1).replace('] [', ' ').replace("\\'", "'").strip('[] ')


def _split(element: Any, mode: str) -> tuple[Any, Any]:
  if isinstance(element, tuple) and len(element) == 2:
    features, labels = element
  else:
    features, labels = element, None
  return features, (None if mode == ModeKeys.PREDICT else labels)


def _serialize_error(iterator) -> str | None:
  """Why this tf.data iterator's state cannot be saved (None if it can): tried once, empty."""
  try:
    iterator._serialize_to_tensors()  # pylint: disable=protected-access
  except (tf.errors.OpError, ValueError, TypeError) as e:
    return getattr(e, 'message', str(e)).split('\n')[0]
  return None


def _static_batch(dataset: tf.data.Dataset) -> bool:
  shapes = [s.shape for s in tf.nest.flatten(dataset.element_spec) if hasattr(s, 'shape')]
  return bool(shapes) and all(s.rank and s[0] is not None for s in shapes)


class Chunk:
  """n consecutive host batches: rows `offset .. offset + n - 1` of `stacked` (one tree
  `[K, B, ...]`), or `singles` (a list)."""

  def __init__(self, n: int, stacked: Any = None, singles: list | None = None,
               offset: int = 0):
    self.n, self.stacked, self.singles, self.offset = n, stacked, singles, offset

  def batches(self) -> list:
    """The batches as a list of single trees (views)."""
    if self.singles is not None:
      return list(self.singles)
    return [jax.tree.map(lambda x, i=i: x[i], self.stacked)
            for i in range(self.offset, self.offset + self.n)]


class InputPipeline:
  """Host batches `(features, labels)` of one input_fn call, with a saveable position.

  Args:
    source: what `sources.normalize` returned.
    mode: a `ModeKeys` value; in PREDICT labels are dropped.
    input_fn: the input_fn (its name identifies a Python iterable).
    stack: batches per tf.data element (K of steps_per_loop; 1 in eval/predict).
  """

  def __init__(self, source: Any, mode: str, input_fn: Callable | None = None, stack: int = 1):
    self.mode = mode
    self._source = source
    self._checked = False
    self.taken = 0  # batches handed out: the position once they are consumed
    self._element, self._offset = None, 0  # current host element [k, B, ...] and cut point
    self._pending: list = []  # single batches handed back (or restored), served first
    self._cardinality = -1
    self._next = None  # tf.data: pulls the next element faster than next() (tf_next.py)
    self._fingerprint: str | None = None  # tf.data's: made when first asked (see fingerprint)
    self.is_tf_data = is_dataset(source)
    if self.is_tf_data:
      check_element_spec(source)
      self._cardinality = int(source.cardinality())
      self.stack = stack if stack > 1 and _static_batch(source) else 1
      self._iterator = iter(self._stacked(source))
      self._next = tf_next.fast_next(self._iterator) or self._iterator.__next__
      # evaluate and predict read from the start and never save a position
      reason = _serialize_error(self._iterator) if mode == ModeKeys.TRAIN else None
      self.kind = 'tf.data' if reason is None else 'replay'
      if reason is not None and self.fingerprint not in _WARNED:
        _WARNED.add(self.fingerprint)  # once per input, not once per train() call
        logger.warning('The input pipeline\'s state cannot be saved (%s): its position is '
                       'saved as a batch count and replayed on restore (exact if the pipeline '
                       'is deterministic).', reason)
    elif is_grain(source):
      self.kind, self.stack = 'grain', 1
      self._iterator = grain_io.GrainIterator(source)
      initial = self._iterator.state()  # the first batch stays buffered, served first
      first = jax.tree.map(lambda x: x[0], self._element) if self._pull() else None
      self._fingerprint = grain_io.fingerprint(input_fn, source, first, initial)
      self._cardinality = grain_io.num_batches(source)
    else:
      self.kind, self.stack = 'replay', 1
      iterator = iter(source)
      first = next(iterator, None)
      self._fingerprint = fp.iterable_fingerprint(input_fn, source, first)
      self._iterator = iterator if first is None else itertools.chain([first], iterator)
      self._cardinality = len(source) if hasattr(source, '__len__') else -1

  @property
  def fingerprint(self) -> str:
    """What identifies this input (saved with its position). A tf.data pipeline's is a
    hash of its serialized graph, constants included, made on first use: evaluate and
    predict never ask (~60 ms, a tenth of an evaluate() of 65k examples, measured)."""
    if self._fingerprint is None:
      self._fingerprint = fp.dataset_fingerprint(self._source)
    return self._fingerprint

  def _stacked(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    """K batches per element, stacked by tf.data ahead of time (without the prefetch the
    stacking ran inside each `next()`: 1.9 ms per element on the dispatch-bound benchmark)."""
    if self.stack == 1:
      return dataset
    return dataset.batch(self.stack).prefetch(2)

  @property
  def num_batches(self) -> int | None:
    """The number of batches if known (finite tf.data cardinality or `len`)."""
    return self._cardinality if self._cardinality >= 0 else None

  # -- batches ---------------------------------------------------------------

  def _next_element(self) -> Any:
    """The next element as host arrays (checked once); None at input end."""
    try:
      element = next(self._iterator) if self._next is None else self._next()
    except StopIteration:
      return None
    except Exception as e:  # tf.data's errors; tested here so Python input never imports TF
      if self.is_tf_data and isinstance(e, tf.errors.OutOfRangeError):
        return None
      if self.is_tf_data and isinstance(e, tf.errors.InvalidArgumentError):  # a failed check
        raise ValueError(f'the input pipeline rejected a batch: {_assertion(e.message)}') from None
      raise
    if isinstance(element, list):
      element = tuple(element)
    element = jax.tree.map(_to_numpy, element)
    if not self._checked:
      features, labels = _split(element, self.mode)
      _check_numeric(features, 'feature')
      if labels is not None:
        _check_numeric(labels, 'label')
      self._checked = True
    return element

  def _pull(self) -> bool:
    """Loads the next element as `[k, B, ...]` host arrays; False at input end."""
    element = self._next_element()
    if element is None:
      return False
    if self.stack == 1:
      element = jax.tree.map(lambda x: x[None], element)
    self._element, self._offset = element, 0
    return True

  def _remaining(self) -> int:
    if self._element is None:
      return 0
    return len(jax.tree.leaves(self._element)[0]) - self._offset

  def take(self, n: int, stacked: bool = False) -> Chunk | None:
    """The next `n` batches (fewer at input end; None if none is left).

    `stacked=True` asks for one stacked tree: with an input that stacks its
    own batches (tf.data, `stack` K), a span of up to `n` rows of the current
    K-batch element (no copy; fewer than `n` where the element ends), else `n`
    batches stacked on the host.
    """
    grain_state = (_grain_state(self._iterator, self._remaining()) if self.kind == 'grain'
                   else None)  # where this chunk starts (unget goes back there)
    if n == 1 and self.stack == 1 and not self._pending and not self._remaining():
      element = self._next_element()  # the per-step fast path: no re-slicing
      if element is None:
        return None
      self.taken += 1
      chunk = Chunk(1, singles=[_split(element, self.mode)])
      chunk.grain_state = grain_state
      return chunk
    if stacked and not self._pending and not self._remaining():
      self._pull()
    if (stacked and self.stack > 1 and not self._pending and self._remaining() and
        len(jax.tree.leaves(self._element)[0]) == self.stack):  # not a short last element
      k, offset = min(n, self._remaining()), self._offset
      chunk = Chunk(k, stacked=_split(self._element, self.mode), offset=offset)
      self._offset += k
      self.taken += k
      if not self._remaining():
        self._element = None
      return chunk
    singles = self._pending[:n]
    del self._pending[:n]
    while len(singles) < n:
      if not self._remaining() and not self._pull():
        break
      k = min(n - len(singles), self._remaining())
      o = self._offset
      singles.extend(_split(jax.tree.map(lambda x, i=i: x[i], self._element), self.mode)
                     for i in range(o, o + k))
      self._offset += k
    if not singles:
      return None
    self.taken += len(singles)
    if (stacked and len(singles) == n and self.stack in (1, n) and
        len({_sizes(b) for b in singles}) == 1):  # stacked on the host: [n, B, ...]
      chunk = Chunk(n, stacked=jax.tree.map(lambda *xs: np.stack(xs), *singles))
    else:
      chunk = Chunk(len(singles), singles=singles)
    chunk.grain_state = grain_state
    return chunk

  def unget(self, chunks: list[Chunk]) -> None:
    """Hands back batches taken but not consumed (the feeder's read-ahead), in order."""
    if not chunks:
      return
    if self.kind == 'grain':  # grain reads them again from the state before the first
      self._iterator.set_state(chunks[0].grain_state)
      self._element, self._offset, self._pending = None, 0, []
      self.taken -= sum(c.n for c in chunks)
      return
    singles = [batch for c in chunks for batch in c.batches()]
    self.taken -= len(singles)
    self._pending = singles + self._pending

  def next_batch(self) -> tuple[Any, Any]:
    """One batch `(features, labels)`; raises StopIteration at input end."""
    chunk = self.take(1)
    if chunk is None:
      raise StopIteration
    return chunk.singles[0]

  def peek(self) -> tuple[Any, Any] | None:
    """The next batch without consuming it (None at input end)."""
    if self._pending:
      return self._pending[0]
    if not self._remaining() and not self._pull():
      return None
    return _split(jax.tree.map(lambda x: x[self._offset], self._element), self.mode)

  # -- position ------------------------------------------------------------

  def capture(self) -> dict:
    """This position as host values (taken on the caller's thread; written later)."""
    state = {'kind': self.kind, 'fingerprint': self.fingerprint, 'batches': self.taken,
             'stack': self.stack}
    captured = {'position': state}
    if self.kind == 'tf.data':
      try:
        captured['iterator'] = self._iterator._serialize_to_tensors()  # pylint: disable=protected-access
      except (tf.errors.OpError, ValueError, TypeError) as e:  # a save never fails for the input
        logger.warning('The input pipeline\'s state could not be saved (%s): from now on its '
                       'position is saved as a batch count and replayed on restore.',
                       getattr(e, 'message', str(e)).split('\n')[0])
        self.kind = state['kind'] = 'replay'
        return captured
      pending = list(self._pending)
      if self._remaining():
        pending.extend(_split(jax.tree.map(lambda x, i=i: x[i], self._element), self.mode)
                       for i in range(self._offset, self._offset + self._remaining()))
      if pending:
        captured['pending'] = [leaf for batch in pending for leaf in jax.tree.leaves(batch)]
        state['pending'] = len(pending)
    elif self.kind == 'grain':
      state['grain'] = _grain_state(self._iterator, self._remaining())
    return captured

  def restore(self, directory: str, step: int) -> bool:
    """Moves to the position saved in `directory`; False (start from the top) if it is
    missing or belongs to another input."""
    path = os.path.join(directory, 'position.json')
    if not os.path.exists(path):
      logger.info('No input position saved at step %d; the input starts at its first batch.',
                  step)
      return False
    with open(path) as f:
      state = json.load(f)
    if state['fingerprint'] != self.fingerprint:
      logger.info('The input differs from the one saved at step %d (another input_fn or '
                  'data): it starts at its own first batch.', step)
      return False
    batches = state['batches']
    if self.kind == 'tf.data' and state['kind'] == 'tf.data' and state['stack'] == self.stack:
      variant = tf.io.parse_tensor(tf.io.read_file(os.path.join(directory, 'iterator')),
                                   tf.variant)
      self._iterator._restore_from_tensors({'_STATE': variant})  # pylint: disable=protected-access
      self._element, self._offset, self._pending = None, 0, []
      if state.get('pending'):
        with np.load(os.path.join(directory, 'pending.npz'), allow_pickle=False) as data:
          leaves = [data[f'leaf{i}'] for i in range(len(data.files))]
        structure = jax.tree.structure(_split(tf.nest.map_structure(
            lambda _: 0, self._iterator.element_spec), self.mode))
        k = structure.num_leaves
        self._pending = [jax.tree.unflatten(structure, leaves[i:i + k])
                         for i in range(0, len(leaves), k)]
    elif self.kind == 'grain' and state['kind'] == 'grain':
      self._iterator.set_state(state['grain'])
      self._element, self._offset, self._pending = None, 0, []
    else:
      logger.info('Replaying %d input batches to reach the position saved at step %d.',
                  batches, step)
      # Through this very iterator: a second iteration of the same dataset object
      # (`Dataset.skip` on it) would draw another reshuffle_each_iteration order.
      left = batches
      while left and (chunk := self.take(min(left, 256))) is not None:
        left -= chunk.n
    self.taken = batches
    return True


def write_position(directory: str, captured: dict) -> None:
  """Writes what `capture` returned into `directory` (run on orbax's writer thread)."""
  os.makedirs(directory, exist_ok=True)
  if 'iterator' in captured:
    data = tf.io.serialize_tensor(captured['iterator']['_STATE'])
    tf.io.write_file(os.path.join(directory, 'iterator'), data)
  if 'pending' in captured:
    np.savez(os.path.join(directory, 'pending.npz'),
             **{f'leaf{i}': x for i, x in enumerate(captured['pending'])})
  with open(os.path.join(directory, 'position.json'), 'w') as f:
    json.dump(captured['position'], f)


def _sizes(batch) -> tuple:
  return tuple(np.shape(x)[0] for x in jax.tree.leaves(batch))


def _grain_state(iterator: grain_io.GrainIterator, buffered: int) -> Any:
  """grain's state at the next batch to hand out: before the batch pulled last if it is
  still held (`buffered`: a grain element is one batch), else the iterator's own."""
  return iterator.state_before_last() if buffered else iterator.state()
