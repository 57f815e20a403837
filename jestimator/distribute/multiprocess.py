"""Many processes: a thin wrapper over `jax.distributed.initialize`.

JAX's multi-controller runtime is the engine: every process runs the same
program on its own devices and its own input shard; `jax.devices()` is then
the global device list, so the default mesh spans all processes. With no
arguments JAX detects SLURM, Open MPI and Kubernetes/TPU environments itself.
What this adds: CPU collectives (gloo) so CPU-only clusters and tests work,
bounded timeouts, and an error that says which coordinator was unreachable.
"""

from __future__ import annotations

import socket
import time
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
               timeout_s: int = 120, heartbeat_timeout_s: int = 30) -> None:
  """Joins (or, as process 0, starts) the job; call before any other JAX work.

  Args:
    coordinator_address: 'host:port' of process 0 (None: detect the cluster).
    num_processes, process_id: this job's size and this process's index.
    local_device_ids: the local devices this process uses (None: all).
    timeout_s: how long to wait for every process to join.
    heartbeat_timeout_s: how soon a dead process makes the others fail.
  """
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if coordinator_address and process_id:  # process 0 starts the service; others wait for it
    _wait_for_coordinator(coordinator_address, timeout_s, process_id, num_processes)
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id, local_device_ids,
                               initialization_timeout=timeout_s,
                               heartbeat_timeout_seconds=heartbeat_timeout_s)
  except Exception as e:  # the runtime's own errors do not say what was being waited for
    raise RuntimeError(
        f'jestimator.distribute.initialize: process {process_id} of {num_processes} could not '
        f'join the coordinator at {coordinator_address!r} within {timeout_s} s: {e}') from e


def _wait_for_coordinator(address: str, timeout_s: float, process_id, num_processes) -> None:
  """Polls the coordinator's TCP port: the runtime aborts the process (no exception)
  when it cannot register, so an unreachable coordinator is reported here instead."""
  host, port = address.rsplit(':', 1)
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      socket.create_connection((host, int(port)), timeout=1).close()
      return
    except OSError as e:
      if time.monotonic() > deadline:
        raise RuntimeError(
            f'jestimator.distribute.initialize: process {process_id} of {num_processes} could '
            f'not join the coordinator at {address!r} within {timeout_s} s: {e}') from None
      time.sleep(0.2)


def is_chief() -> bool:
  """Process 0: the one that logs and shows progress."""
  return jax.process_index() == 0


def largest_over_processes(n: int) -> int:
  """The largest `n` over all processes (eval/predict pad every process to it)."""
  if jax.process_count() == 1:
    return n
  return int(np.max(multihost_utils.process_allgather(np.int32(n))))


def all_processes(flag: bool) -> bool:
  """`flag` and-ed over all processes (one tiny all-gather when there are several)."""
  if jax.process_count() == 1:
    return flag
  return bool(np.all(multihost_utils.process_allgather(np.bool_(flag))))
