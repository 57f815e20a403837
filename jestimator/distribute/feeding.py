"""Host numpy batches -> global `jax.Array`s sharded on the mesh's data axis.

Each process passes its own part of the global batch; the global batch is the
concatenation over processes (`jax.make_array_from_process_local_data`). In a
single process the local batch *is* the global batch: numpy goes to the
jitted step as is, whose `in_shardings` place it in jit's C++ argument path
(cheaper than `device_put`). The feeder thread (`inputs/feeder.py`) calls
`place`/`place_stacked` ahead of the loop.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jestimator.distribute.mesh import batch_sharded


class BatchFeeder:
  """Turns per-process numpy pytrees `[local_batch, ...]` into global arrays."""

  def __init__(self, mesh: Mesh, data_axis: str):
    self.sharding = batch_sharded(mesh, data_axis)
    self.stacked_sharding = NamedSharding(mesh, P(None, data_axis))
    self.data_axis = data_axis
    self.data_size = mesh.shape[data_axis]
    self._checked: set[int] = set()

  def divides(self, local_batch: int) -> bool:
    """Whether the data axis divides the global batch of `local_batch` per process."""
    return (local_batch * jax.process_count()) % self.data_size == 0

  def place(self, tree: Any) -> Any:
    """A batch `[B, ...]` as global arrays on the mesh (the step's input sharding)."""
    return self._place(tree, self.sharding, 0)

  def place_stacked(self, tree: Any) -> Any:
    """K stacked batches `[K, B, ...]` as global arrays (batch axis on the data axis)."""
    return self._place(tree, self.stacked_sharding, 1)

  def _place(self, tree: Any, sharding, batch_axis: int) -> Any:
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
      return tree
    self.check_batch_size(np.shape(leaves[0])[batch_axis])
    if jax.process_count() == 1:  # jit's in_shardings place numpy faster than device_put
      return tree
    arrays = [jax.make_array_from_process_local_data(sharding, x) for x in leaves]
    return jax.tree.unflatten(treedef, arrays)

  def check_batch_size(self, local_batch: int) -> None:
    """Raises if the global batch does not split evenly over the data axis."""
    if local_batch in self._checked:
      return
    if not self.divides(local_batch):
      global_batch = local_batch * jax.process_count()
      raise ValueError(
          f'The global batch size {global_batch} is not divisible by the {self.data_axis!r} '
          f'mesh axis size {self.data_size}: use a batch size that is a multiple of '
          f'{self.data_size} (e.g. drop_remainder=True for the last batch) or a smaller mesh.')
    self._checked.add(local_batch)

  def padded_size(self, local_batch: int) -> int:
    """The smallest local batch >= `local_batch` whose global batch the data axis divides."""
    size = local_batch
    while not self.divides(size):
      size += 1
    return size

  def __call__(self, tree: Any) -> Any:
    """Global-batch arrays for a compiled step (numpy as is in one process): `place`."""
    return self.place(tree)
