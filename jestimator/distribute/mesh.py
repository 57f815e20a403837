"""Building the device mesh a run uses, from `RunConfig`."""

from __future__ import annotations

import math
from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(mesh_shape: Mapping[str, int] | None = None, data_axis: str = 'data',
              devices=None) -> Mesh:
  """A mesh over `devices` (default: all devices of all processes).

  Args:
    mesh_shape: axis name -> size; one size may be -1 (the rest of the
      devices). Default `{data_axis: -1}`.
    data_axis: the axis name that must exist (the batch is split on it).
    devices: the devices to lay out (default `jax.devices()`).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = dict(mesh_shape or {data_axis: -1})
  if data_axis not in shape:
    raise ValueError(f'mesh_shape {shape} has no {data_axis!r} axis (RunConfig.data_axis).')
  unknown = [k for k, v in shape.items() if v == -1]
  if len(unknown) > 1:
    raise ValueError(f'mesh_shape {shape}: at most one axis may be -1.')
  known = math.prod(v for v in shape.values() if v != -1)
  if unknown:
    if len(devices) % known:
      raise ValueError(f'mesh_shape {shape}: {len(devices)} devices are not divisible by {known}.')
    shape[unknown[0]] = len(devices) // known
  if math.prod(shape.values()) != len(devices):
    raise ValueError(
        f'mesh_shape {shape} needs {math.prod(shape.values())} devices; there are {len(devices)}.')
  return Mesh(np.asarray(devices).reshape(tuple(shape.values())), tuple(shape))


def mesh_from_config(config) -> Mesh:
  """The mesh named by a RunConfig (its `mesh`, else one built from `mesh_shape`)."""
  if config.mesh is not None:
    return config.mesh
  return make_mesh(config.mesh_shape, config.data_axis)


def replicated(mesh: Mesh) -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh, data_axis: str) -> NamedSharding:
  """Leading (batch) dimension split over `data_axis`."""
  return NamedSharding(mesh, P(data_axis))
