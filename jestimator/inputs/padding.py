"""Padding the last partial evaluation/prediction batch to the static batch size."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def batch_size_of(tree: Any) -> int:
  return int(np.shape(jax.tree.leaves(tree)[0])[0])


def pad_batch(tree: Any, size: int) -> tuple[Any, np.ndarray]:
  """Pads every leaf `[n, ...]` to `[size, ...]` by repeating the last example.

  Repeating real data (not zeros) keeps padded rows numerically harmless (no
  log(0) NaNs that a mask could not undo). Returns the padded tree and a
  float32 mask `[size]`, 1.0 for the `n` real examples.
  """
  n = batch_size_of(tree)
  if n > size:
    raise ValueError(f'a batch of {n} examples is larger than the first batch ({size}); '
                     'evaluation and prediction need the first batch to be the largest.')
  mask = np.zeros(size, np.float32)
  mask[:n] = 1.0
  if n == size:
    return tree, mask
  index = np.minimum(np.arange(size), n - 1)
  return jax.tree.map(lambda x: np.take(x, index, axis=0), tree), mask
