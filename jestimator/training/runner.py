"""The compiled step runner: the pure steps of `steps.py` under `jax.jit`.

Shardings are explicit: the batch is split on the data axis; the train state
follows `RunConfig.partition_rules` (replicated by default, FSDP or tensor
parallel by rule) and is created directly sharded (`jax.eval_shape`, then
`jit` with `out_shardings`), never whole on one device first; metric states
are replicated. The train state is donated so its buffers are reused in place.
One executable per mode and batch shape; the jitted callables live as long as
the runner, so repeated `train()` calls on one Estimator never recompile.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jestimator.distribute.feeding import BatchFeeder
from jestimator.distribute.mesh import batch_sharded, replicated
from jestimator.distribute.partitioning import Partitioner
from jestimator.training import checks, steps
from jestimator.training.train_state import TrainState

_SEED = jax.ShapeDtypeStruct((2,), jnp.uint32)


def shardings_of(tree: Any) -> Any:
  """The sharding of every array in `tree`."""
  return jax.tree.map(lambda x: x.sharding, tree)


def _key(shardings: Any) -> tuple:
  leaves, treedef = jax.tree.flatten(shardings)
  return treedef, tuple(leaves)


class Runner:
  """Holds the mesh, the shardings and the jitted steps of one model_fn module."""

  def __init__(self, module, mesh: Mesh, data_axis: str, streams: Sequence[str],
               accumulation_steps: int = 1, partition_rules=None, runner: str = 'jit'):
    if runner not in ('jit', 'shard_map'):
      raise ValueError(f"RunConfig.runner must be 'jit' or 'shard_map', got {runner!r}.")
    if runner == 'shard_map' and partition_rules is not None:
      raise ValueError('the shard_map runner replicates the train state (data parallel); '
                       f'partition_rules={partition_rules!r} needs the jit runner.')
    self.kind = runner
    self.data_axis = data_axis
    self.module = module
    self.accumulation_steps = accumulation_steps
    self.mesh = mesh
    self.streams = tuple(streams)
    self.feed = BatchFeeder(mesh, data_axis)
    self.partitioner = Partitioner(mesh, partition_rules, data_axis)
    self._repl = self.replicated = replicated(mesh)
    self._batch = batch_sharded(mesh, data_axis)
    self._stacked = NamedSharding(mesh, P(None, data_axis))
    self._train: dict = {}
    self._eval: dict = {}
    self._predict: dict = {}
    self._metric_shapes: dict = {}
    self._variable_shapes: dict = {}
    self.true, self.false = self.scalar(True, np.bool_), self.scalar(False, np.bool_)

  # -- initialisation ------------------------------------------------------

  def abstract_spec(self, features, labels, mode):
    return steps.abstract_spec(self.module, self.streams, features, labels, mode)

  def _state_shapes(self, features, labels, mode, optimizer):
    init = steps.make_init_fn(self.module, self.streams, optimizer, mode)
    shapes = jax.eval_shape(init, _SEED, features, labels)
    return init, shapes, self.partitioner.shardings(shapes, check_unused=optimizer is not None)

  def init_state(self, seed: int, features, labels, mode: str, optimizer) -> TrainState:
    """A fresh TrainState, created directly with its partitioned shardings."""
    init, _, shardings = self._state_shapes(features, labels, mode, optimizer)
    fn = jax.jit(init, in_shardings=(self._repl, self._batch, self._batch),
                 out_shardings=shardings)
    return fn(jax.random.PRNGKey(seed), features, labels)

  def abstract_state(self, features, labels, mode: str, optimizer) -> TrainState:
    """Shapes, dtypes and shardings of the state `init_state` would create."""
    _, shapes, shardings = self._state_shapes(features, labels, mode, optimizer)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        shapes, shardings)

  def variable_shapes(self, features, labels, mode: str) -> Any:
    """Shapes and dtypes of the variables the model_fn builds for these inputs (traced
    once per input layout): what a checkpoint must hold to serve evaluate/predict."""
    leaves, treedef = jax.tree.flatten((features, labels))
    key = (mode, treedef, tuple((np.shape(x), np.dtype(x.dtype)) for x in leaves))
    if key not in self._variable_shapes:
      self._variable_shapes[key] = self._state_shapes(features, labels, mode, None)[1].variables
    return self._variable_shapes[key]

  def place_abstract(self, abstract_variables: Any) -> Any:
    """`abstract_variables` (shapes, dtypes) with the partition rules' shardings."""
    shardings = self.partitioner.shardings(abstract_variables)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        abstract_variables, shardings)

  # -- compiled steps ------------------------------------------------------

  def train_step(self, optimizer, state_shardings, stacked: bool = False) -> Callable:
    """The jitted train step for `optimizer` (cached: compiled once per shape).

    `stacked=True`: K steps per call over batches stacked `[K, B, ...]`.
    """
    key = (id(optimizer), stacked, _key(state_shardings))
    if key not in self._train:
      if self.kind == 'shard_map':
        self._train[key] = self._shard_map_train_step(optimizer, stacked)
        return self._train[key]
      step = steps.make_train_step(self.module, optimizer, self.streams, self.accumulation_steps)
      batch = self._stacked if stacked else self._batch
      self._train[key] = jax.jit(
          steps.make_multi_step(step) if stacked else step,
          in_shardings=(state_shardings, self._repl, self._repl, self._repl, batch, batch),
          out_shardings=(state_shardings, self._repl, self._repl, self._repl),
          donate_argnums=(0, 1, 2))
    return self._train[key]

  def _shard_map_train_step(self, optimizer, stacked: bool) -> Callable:
    """The same step as per-device code under `jax.shard_map` (explicit collectives)."""
    axis = (self.data_axis, self.mesh.shape[self.data_axis])
    step = steps.make_train_step(self.module, optimizer, self.streams, self.accumulation_steps,
                                 axis=axis)
    batch = P(None, self.data_axis) if stacked else P(self.data_axis)
    mapped = jax.shard_map(steps.make_multi_step(step) if stacked else step, mesh=self.mesh,
                           in_specs=(P(), P(), P(), P(), batch, batch),
                           out_specs=(P(), P(), P(), P()), check_vma=True)
    return jax.jit(mapped, donate_argnums=(0, 1, 2))

  def eval_metrics_shapes(self, variables, features, labels, mask) -> Any:
    """The metric states' structure for these input shapes (traced once per shape)."""
    leaves, treedef = jax.tree.flatten((variables, features, labels, mask))
    key = (treedef, tuple((np.shape(x), np.dtype(x.dtype)) for x in leaves))
    if key not in self._metric_shapes:
      fn = steps.make_eval_metrics_fn(self.module, self.streams)
      self._metric_shapes[key] = jax.eval_shape(fn, variables, _SEED, features, labels, mask)
    return self._metric_shapes[key]

  def eval_step(self, variables) -> Callable:
    """The jitted eval step for variables sharded as `variables` are."""
    shardings = shardings_of(variables)
    key = _key(shardings)
    if key not in self._eval:
      step = steps.make_eval_step(steps.make_eval_metrics_fn(self.module, self.streams))
      self._eval[key] = jax.jit(
          step,
          in_shardings=(shardings, self._repl, self._repl, self._repl, self._batch,
                        self._batch, self._batch, self._repl, self._repl),
          out_shardings=(self._repl, self._repl, self._repl), donate_argnums=(2, 3))
    return self._eval[key]

  def predict_step(self, variables) -> Callable:
    """The jitted predict step for variables sharded as `variables` are."""
    shardings = shardings_of(variables)
    key = _key(shardings)
    if key not in self._predict:
      self._predict[key] = jax.jit(
          steps.make_predict_step(self.module, self.streams),
          in_shardings=(shardings, self._repl, self._repl, self._batch, self._batch,
                        self._repl),
          out_shardings=(self._batch, self._repl), donate_argnums=(2,))
    return self._predict[key]

  def zeros_like_shapes(self, shapes) -> Any:
    """Replicated zeros with the structure of `shapes` (metric accumulators)."""
    return jax.tree.map(
        lambda s: jax.device_put(np.zeros(s.shape, s.dtype), self._repl), shapes)

  def scalar(self, value, dtype) -> jax.Array:
    return jax.device_put(np.asarray(value, dtype), self._repl)

  def empty_checks(self) -> checks.CheckSlot:
    """A replicated `CheckSlot` with no failure (threaded through the steps)."""
    return jax.device_put(checks.empty_slot(), self._repl)
