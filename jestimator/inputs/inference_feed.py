"""Evaluation and prediction batches: padded to one static size, masked, fed ahead.

Every example counts exactly once: each batch is padded to `size` (the first
batch, rounded up to a multiple of the data axis) with a mask of its real
rows. With `exact_tail` (evaluate, one process) a smaller last batch runs at
its own size when the data axis divides it, or padded only up to the next
multiple, so a model_fn's plain-mean loss stays tf.estimator's value (the
mean of per-batch mean losses); one extra compile per distinct tail size. A `Feeder` thread pulls, checks, pads and
places the batches while the device works. Every process must run the same
number of steps; one whose input ended while others' go on feeds fully
masked copies (n = 0) until all are done (agreed on this thread: it is a
collective).
"""

from __future__ import annotations

from typing import Any, Iterator

import jax
import numpy as np

from jestimator.distribute.multiprocess import all_processes
from jestimator.inputs.feeder import background_pays, make_feeder
from jestimator.inputs.padding import batch_size_of, pad_batch
from jestimator.inputs.pipeline import InputPipeline
from jestimator.inputs.signature import Signature
from jestimator.reporting import logger


def padded_batches(pipeline: InputPipeline, runner, size: int, steps: int | None,
                   depth: int = 2, exact_tail: bool = False
                   ) -> Iterator[tuple[Any, Any, Any, int]]:
  """(global features, labels, mask, n) per batch, padded to `size` local examples."""
  signature = Signature.of(*pipeline.peek())
  exact_tail = exact_tail and jax.process_count() == 1  # global shapes must agree
  warned = []

  def target(n: int) -> int:
    if not exact_tail or n >= size:
      return size
    padded = runner.feed.padded_size(n)
    if padded != n and not warned:  # once per call
      warned.append(padded)
      logger.warning(
          'The last evaluation batch of %d examples is padded to %d to divide the %r mesh '
          'axis (%d devices): the metrics and heads mask the padding, but a hand-written '
          'loss must use je.masked_mean(...) to stay exact.', n, padded,
          runner.feed.data_axis, runner.feed.data_size)
    return padded

  def produce(count: int):
    if steps is not None and count >= steps:
      raise StopIteration
    batch = pipeline.next_batch()
    signature.check(*batch)
    n = batch_size_of(batch[0])
    padded, mask = pad_batch(batch, target(n))
    return (padded, runner.feed.place((*padded, mask)), n), 1

  feeder = make_feeder(produce, background=background_pays(pipeline), depth=depth,
                       name='jestimator-eval-feeder')
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
        placed = runner.feed.place((*last, np.zeros(batch_size_of(last[0]), np.float32)))
        n = 0
      last = host
      yield (*placed, n)
      count += 1
      if steps is not None and count >= steps:
        return
  finally:
    feeder.close()
