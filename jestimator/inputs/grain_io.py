"""grain input: a grain dataset or DataLoader as an input_fn's batches, and its position.

An input_fn may return (grain is an optional dependency: `pip install -e ".[grain]"`)

  grain.MapDataset   batched by the input_fn (`.batch(B)`); iterated through
                     `to_iter_dataset()` with grain's default read threads and
                     prefetch buffer (return `ds.to_iter_dataset(grain.ReadOptions
                     (...))` to choose them: `num_threads=0` for data in memory)
  grain.IterDataset  iterated as is
  grain.DataLoader   iterated as is (its `Batch` operation makes the batches)

Every element is one batch: a numpy pytree `(features, labels)`, or features
alone. Several processes shard in the input_fn, e.g. each reads its slice of
every global batch: `ds.batch(per_process)[shard.shard_index::shard.shard_count]`
with `shard = grain.sharding.ShardByJaxProcess()`.

The position is grain's own iterator state (`get_state()`: a few bytes of JSON
such as `{"next_index": 1234}`; no buffers), set back with `set_state()` on
restore: nothing is re-read. It is written as JSON into the input item's
`process_<i>/position.json` next to the input's fingerprint -- the same JSON
that grain's orbax `CheckpointHandler` writes -- rather than by that handler,
because the handler takes the state of the live iterator when orbax writes,
while the position to save is the one the train loop consumed: it is taken
on the loop's thread at a pause point (grain iterators are not thread-safe,
and the feeder thread that owns the iterator may have pulled ahead), then
written in the background. The handler also restores without checking that
the input is the same one.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from typing import Any, Callable

from jestimator.inputs import fingerprint as fp


def is_grain(source: Any) -> bool:
  """Whether `source` is a grain MapDataset, IterDataset or DataLoader (grain is only
  looked up if something imported it already)."""
  grain = sys.modules.get('grain')
  types = tuple(getattr(grain, name, None) for name in ('MapDataset', 'IterDataset', 'DataLoader'))
  return grain is not None and None not in types and isinstance(source, types)


class GrainIterator:
  """A grain iterator that also keeps its state from before the batch it gave last.

  The pipeline may hold that batch unconsumed (a peek), so the position of the
  next batch to hand out is `state_before_last()` then, else `state()`. States
  are JSON values (a DataLoader's bytes are decoded).
  """

  def __init__(self, source: Any):
    grain = sys.modules['grain']
    self._iterator = iter(source.to_iter_dataset() if isinstance(source, grain.MapDataset)
                          else source)
    self._before_last = self._iterator.get_state()
    self._bytes = isinstance(self._before_last, bytes)  # a DataLoaderIterator's state

  def __iter__(self):
    return self

  def __next__(self):
    before = self._iterator.get_state()
    element = next(self._iterator)
    self._before_last = before
    return element

  def _decode(self, state) -> Any:
    return json.loads(state) if self._bytes else state

  def state(self) -> Any:
    """The state after the last batch given: where the next one starts."""
    return self._decode(self._iterator.get_state())

  def state_before_last(self) -> Any:
    """The state before the last batch given (the initial state before any)."""
    return self._decode(self._before_last)

  def set_state(self, state: Any) -> None:
    self._iterator.set_state(json.dumps(state).encode() if self._bytes else state)


def num_batches(source: Any) -> int:
  """A MapDataset's length if finite; -1 if unknown (grain's infinite length is maxsize)."""
  length = len(source) if hasattr(source, '__len__') else -1
  return length if length < sys.maxsize else -1


def _describe(source: Any, initial_state: Any) -> str:
  """The pipeline's transformations, output to source (`str` of each dataset), or a
  DataLoader's initial state (its sampler: records, shuffle, seed, shards), without
  code locations and object addresses, which change between runs."""
  if hasattr(source, '_parents'):
    lines, todo = [], [source]
    while todo:
      node = todo.pop()
      lines.append(str(node))
      todo.extend(reversed(node._parents))  # pylint: disable=protected-access
    text = '\n'.join(lines)
  else:
    text = json.dumps(initial_state, sort_keys=True)
  text = re.sub(r' @ \S+?(?=[),\s]|$)', '', text)
  return re.sub(r' at 0x[0-9a-fA-F]+', '', text)


def fingerprint(input_fn: Callable | None, source: Any, first: Any,
                initial_state: Any) -> str:
  """The input_fn's name, the source type, the first batch (as for any iterable) and the
  grain pipeline's description."""
  base = fp.iterable_fingerprint(input_fn, source, first, kind='grain')
  text = f'{base}|{_describe(source, initial_state)}'
  return 'grain:' + hashlib.sha256(text.encode()).hexdigest()
