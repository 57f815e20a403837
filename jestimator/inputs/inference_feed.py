"""Evaluation and prediction batches: padded to one static size, masked, fed ahead.

Every example counts exactly once with one compiled shape: each batch is
padded to `size` (the first batch, rounded up to a multiple of the data
axis) with a mask of its real rows. A `Feeder` thread pulls, checks, pads and
places the batches while the device works. Every process must run the same
number of steps; one whose input ended while others' go on feeds fully
masked copies (n = 0) until all are done (agreed on this thread: it is a
collective).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from jestimator.distribute.multiprocess import all_processes
from jestimator.inputs.feeder import Feeder
from jestimator.inputs.padding import batch_size_of, pad_batch
from jestimator.inputs.pipeline import InputPipeline
from jestimator.inputs.signature import Signature


def padded_batches(pipeline: InputPipeline, runner, size: int, steps: int | None,
                   depth: int = 2) -> Iterator[tuple[Any, Any, Any, int]]:
  """(global features, labels, mask, n) per batch, padded to `size` local examples."""
  signature = Signature.of(*pipeline.peek())

  def produce(count: int):
    if steps is not None and count >= steps:
      raise StopIteration
    batch = pipeline.next_batch()
    signature.check(*batch)
    padded, mask = pad_batch(batch, size)
    return (padded, runner.feed.place((*padded, mask)), batch_size_of(batch[0])), 1

  feeder = Feeder(produce, depth=depth, name='jestimator-eval-feeder')
  last, count = None, 0
  try:
    while True:
      try:
        host, placed, n = feeder.get()
        exhausted = False
      except StopIteration:
        exhausted = True
      if all_processes(exhausted):
        return
      if exhausted:  # keep feeding the last padded batch, fully masked
        placed = runner.feed.place((*last, np.zeros(size, np.float32)))
        n = 0
      last = host
      yield (*placed, n)
      count += 1
      if steps is not None and count >= steps:
        return
  finally:
    feeder.close()
