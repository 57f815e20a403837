"""`InputContext`: what an input_fn needs to read its own shard (tf.distribute's)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class InputContext:
  """Which input pipeline this process runs, and how the batch is split.

  Attributes:
    num_input_pipelines: how many processes each run an input pipeline.
    input_pipeline_id: this process's index in [0, num_input_pipelines).
    num_replicas_in_sync: devices on the data axis (the batch is split over them).
  """

  num_input_pipelines: int = 1
  input_pipeline_id: int = 0
  num_replicas_in_sync: int = 1

  def get_per_replica_batch_size(self, global_batch_size: int) -> int:
    """`global_batch_size / num_replicas_in_sync`; raises if it does not divide."""
    if global_batch_size % self.num_replicas_in_sync:
      raise ValueError(f'The global batch size {global_batch_size} is not divisible by '
                       f'num_replicas_in_sync {self.num_replicas_in_sync}.')
    return global_batch_size // self.num_replicas_in_sync

  def get_per_process_batch_size(self, global_batch_size: int) -> int:
    """`global_batch_size / num_input_pipelines`: what this process's input_fn yields."""
    if global_batch_size % self.num_input_pipelines:
      raise ValueError(f'The global batch size {global_batch_size} is not divisible by '
                       f'num_input_pipelines {self.num_input_pipelines}.')
    return global_batch_size // self.num_input_pipelines
