"""Meshes, shardings and feeding host batches to them."""

from jestimator.distribute.mesh import make_mesh
from jestimator.distribute.multiprocess import initialize, is_chief

__all__ = ['initialize', 'is_chief', 'make_mesh']
