"""Meshes, shardings and feeding host batches to them."""

from jestimator.distribute.mesh import make_mesh

__all__ = ['make_mesh']
