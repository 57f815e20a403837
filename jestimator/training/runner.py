"""The compiled step runner: the pure steps of `steps.py` under `jax.jit`.

Shardings are explicit: the batch is split on the data axis, the train state
and metric states are replicated, and the train state is donated so its
buffers are reused in place. One executable per mode and batch shape; the
jitted callables live as long as the runner, so repeated `train()` calls on
one Estimator never recompile.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jestimator.distribute.feeding import BatchFeeder
from jestimator.distribute.mesh import batch_sharded, replicated

from jestimator.training import steps
from jestimator.training.train_state import TrainState


class Runner:
  """Holds the mesh, the shardings and the jitted steps of one model_fn module."""

  def __init__(self, module, mesh: Mesh, data_axis: str, streams: Sequence[str],
               accumulation_steps: int = 1):
    self.module = module
    self.accumulation_steps = accumulation_steps
    self.mesh = mesh
    self.streams = tuple(streams)
    self.feed = BatchFeeder(mesh, data_axis)
    self._repl = self.replicated = replicated(mesh)
    self._batch = batch_sharded(mesh, data_axis)
    self._stacked = NamedSharding(mesh, P(None, data_axis))
    self._train: dict[int, Callable] = {}
    self._eval = None
    self._predict = None
    self._metric_shapes: dict = {}
    self.true, self.false = self.scalar(True, np.bool_), self.scalar(False, np.bool_)

  # -- initialisation ------------------------------------------------------

  def abstract_spec(self, features, labels, mode):
    return steps.abstract_spec(self.module, self.streams, features, labels, mode)

  def init_state(self, seed: int, features, labels, mode: str, optimizer) -> TrainState:
    """A fresh TrainState, created directly with replicated shardings."""
    init = steps.make_init_fn(self.module, self.streams, optimizer, mode)
    fn = jax.jit(init, in_shardings=(self._repl, self._batch, self._batch),
                 out_shardings=self._repl)
    return fn(jax.random.PRNGKey(seed), features, labels)

  def abstract_state(self, features, labels, mode: str, optimizer) -> TrainState:
    """Shapes, dtypes and shardings of the state `init_state` would create."""
    init = steps.make_init_fn(self.module, self.streams, optimizer, mode)
    shapes = jax.eval_shape(init, jax.ShapeDtypeStruct((2,), jnp.uint32), features, labels)
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self._repl), shapes)

  # -- compiled steps ------------------------------------------------------

  def train_step(self, optimizer, stacked: bool = False) -> Callable:
    """The jitted train step for `optimizer` (cached: compiled once per shape).

    `stacked=True`: K steps per call over batches stacked `[K, B, ...]`.
    """
    key = (id(optimizer), stacked)
    if key not in self._train:
      step = steps.make_train_step(self.module, optimizer, self.streams, self.accumulation_steps)
      batch = self._stacked if stacked else self._batch
      self._train[key] = jax.jit(
          steps.make_multi_step(step) if stacked else step,
          in_shardings=(self._repl, self._repl, self._repl, self._repl, batch, batch),
          out_shardings=(self._repl, self._repl, self._repl, self._repl),
          donate_argnums=(0, 1, 2))
    return self._train[key]

  def eval_metrics_shapes(self, variables, features, labels, mask) -> Any:
    """The metric states' structure for these input shapes (traced once per shape)."""
    leaves, treedef = jax.tree.flatten((variables, features, labels, mask))
    key = (treedef, tuple((np.shape(x), np.dtype(x.dtype)) for x in leaves))
    if key not in self._metric_shapes:
      fn = steps.make_eval_metrics_fn(self.module, self.streams)
      self._metric_shapes[key] = jax.eval_shape(
          fn, variables, jax.ShapeDtypeStruct((2,), jnp.uint32), features, labels, mask)
    return self._metric_shapes[key]

  def eval_step(self) -> Callable:
    if self._eval is None:
      step = steps.make_eval_step(steps.make_eval_metrics_fn(self.module, self.streams))
      self._eval = jax.jit(
          step,
          in_shardings=(self._repl, self._repl, self._repl, self._batch, self._batch,
                        self._batch, self._repl),
          out_shardings=self._repl, donate_argnums=(2,))
    return self._eval

  def predict_step(self) -> Callable:
    if self._predict is None:
      self._predict = jax.jit(
          steps.make_predict_step(self.module, self.streams),
          in_shardings=(self._repl, self._repl, self._batch, self._batch),
          out_shardings=self._batch)
    return self._predict

  def zeros_like_shapes(self, shapes) -> Any:
    """Replicated zeros with the structure of `shapes` (metric accumulators)."""
    return jax.tree.map(
        lambda s: jax.device_put(np.zeros(s.shape, s.dtype), self._repl), shapes)

  def scalar(self, value, dtype) -> jax.Array:
    return jax.device_put(np.asarray(value, dtype), self._repl)


