"""Partition rules: which parameters (and their optimizer state) split over which mesh axes.

`RunConfig.partition_rules` is an ordered list of `(regex, PartitionSpec)`,
like T5X's logical rules or Keras' LayoutMap: a leaf of the train state whose
path (`'params/Dense_0/kernel'`, `'opt_state/0/mu/Dense_0/kernel'`, ...)
matches a regex (`re.search`, first rule wins) gets that spec; other leaves
are replicated. Because optimizer moments sit under the parameter's own path,
one rule shards a weight and its Adam moments alike. Presets: None (data
parallel: everything replicated) and `'fsdp'` (every leaf split over the data
axis along its largest divisible dimension). A rule that matches no leaf is
an error, not a silent fallback to replicated.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jestimator.tree_paths import path_name

FSDP = 'fsdp'
_NOT_SHARDED = ('step', 'rng')  # the train state's bookkeeping, not model state


class Partitioner:
  """Computes the NamedSharding of every leaf of a state (or variables) tree."""

  def __init__(self, mesh: Mesh, rules: Sequence[tuple[str, P]] | str | None, data_axis: str):
    if rules is not None and not isinstance(rules, str):
      rules = [(re.compile(r), spec if isinstance(spec, P) else P(*spec)) for r, spec in rules]
    elif rules not in (None, FSDP):
      raise ValueError(f'partition_rules must be a list of (regex, PartitionSpec), None or '
                       f'{FSDP!r}; got {rules!r}.')
    self.mesh, self.rules, self.data_axis = mesh, rules, data_axis

  def shardings(self, tree: Any, check_unused: bool = False) -> Any:
    """A tree of NamedSharding shaped like `tree` (arrays or ShapeDtypeStructs)."""
    used = set()

    def one(path, leaf):
      name, shape = path_name(path), tuple(np.shape(leaf))
      return NamedSharding(self.mesh, self._spec(name, shape, used))

    out = jax.tree_util.tree_map_with_path(one, tree)
    if check_unused and isinstance(self.rules, list):
      unused = [r.pattern for i, (r, _) in enumerate(self.rules) if i not in used]
      if unused:
        names = sorted((path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]),
                       key=lambda n: (not n.startswith('params/'), n))  # parameters first
        raise ValueError(f'partition rule {unused[0]!r} matches no parameter; names look like '
                         f'{names[:6]}.')
    return out

  def _spec(self, name: str, shape: tuple[int, ...], used: set) -> P:
    if self.rules == FSDP:
      return P() if name in _NOT_SHARDED else self._fsdp_spec(shape)
    for i, (regex, spec) in enumerate(self.rules or ()):
      if regex.search(name):
        used.add(i)
        self._check(name, shape, spec)
        return spec
    return P()

  def _fsdp_spec(self, shape: tuple[int, ...]) -> P:
    size = self.mesh.shape[self.data_axis]
    dims = [d for d in np.argsort(shape)[::-1] if shape[d] % size == 0 and shape[d] >= size]
    if not dims:
      return P()
    spec = [None] * len(shape)
    spec[dims[0]] = self.data_axis
    return P(*spec)

  def _check(self, name: str, shape: tuple[int, ...], spec: P) -> None:
    if len(spec) > len(shape):
      raise ValueError(f'partition rule for {name!r}: spec {spec} has more dimensions than '
                       f'the shape {shape}.')
    for dim, axes in zip(shape, spec):
      axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
      for axis in axes:
        if axis not in self.mesh.shape:
          raise ValueError(f'partition rule for {name!r}: mesh has no axis {axis!r} '
                           f'(axes {tuple(self.mesh.shape)}).')
      parts = int(np.prod([self.mesh.shape[a] for a in axes])) if axes else 1
      if dim % parts:
        raise ValueError(f'partition rule for {name!r}: dimension {dim} of shape {shape} is '
                         f'not divisible by {parts} (spec {spec}, mesh {dict(self.mesh.shape)}).')
