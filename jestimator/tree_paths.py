"""Readable names for pytree key paths ('params/Dense_0/kernel')."""

from __future__ import annotations


def path_name(path) -> str:
  """'/'-joined keys of a `jax.tree_util` key path (dict keys, attributes, indices)."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path)
