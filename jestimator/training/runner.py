"""The compiled step runner: the pure steps of `steps.py` under `jax.jit`.

Shardings are explicit: the batch is split on the data axis; the train state
follows `RunConfig.partition_rules` (replicated by default, FSDP or tensor
parallel by rule) and is created directly sharded (`jax.eval_shape`, then
`jit` with `out_shardings`), never whole on one device first; metric states
are replicated. The train state is donated so its buffers are reused in place.
One executable per mode and batch shape; the jitted callables live as long as
the runner, so repeated `train()` calls on one Estimator never recompile.

Debug mode (`RunConfig(debug=True)`) runs the same step functions eagerly
(`jax.disable_jit`; no donation; inputs and outputs placed with the shardings
jit would use), so a `print` in the model_fn shows values (under the train
step's gradient, as `GradTracer(primal=...)`), `breakpoint()` stops there and
a Python exception points at the user's line. Every primitive is checked as
it runs with checkify's own rules (NaN output, division by zero, index out of
bounds, a failed `checkify.check`); the first failure raises `DebugCheckError`
naming the op's source line. Not `checkify.checkify(step)`: that traces the
step to a jaxpr first, so the model_fn would see tracers (a print shows
`JitTracer`, `float(x)` fails), and pairing it with an eager pass would run
the model_fn twice per step; checking each op eagerly names the same line in
one pass. This leans on `jax._src` (an `EvalTrace` subclass, checkify's rule
table), checked on jax 0.10. The shapes the Estimator infers beforehand
(`jax.eval_shape`) still trace the model_fn, so a print fires there too, with
tracers. The shard_map runner has no debug mode.
"""

from __future__ import annotations

import logging
import os
import sysconfig
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import checkify as checkify_rules  # per-primitive checks (debug mode)
from jax._src import core as jax_core  # the eager trace debug mode extends
from jax.experimental import checkify
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jestimator.distribute.feeding import BatchFeeder
from jestimator.distribute.mesh import batch_sharded, replicated
from jestimator.distribute.partitioning import Partitioner
from jestimator.training import checks, steps
from jestimator.training.train_state import TrainState

_SEED = jax.ShapeDtypeStruct((2,), jnp.uint32)
# What debug mode checks on every op (checkify's categories).
DEBUG_CHECKS = (checkify.nan_checks | checkify.div_checks | checkify.index_checks |
                checkify.user_checks)

logger = logging.getLogger('jestimator')


def shardings_of(tree: Any) -> Any:
  """The sharding of every array in `tree`."""
  return jax.tree.map(lambda x: x.sharding, tree)


def _key(shardings: Any) -> tuple:
  leaves, treedef = jax.tree.flatten(shardings)
  return treedef, tuple(leaves)


class DebugCheckError(ValueError):
  """Debug mode: an op made a NaN, divided by zero, indexed out of bounds or failed a check."""


_THIS_FILE = os.path.abspath(__file__)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(_THIS_FILE)) + os.sep  # jestimator's own code
_JAX_DIR = os.path.dirname(os.path.abspath(jax.__file__)) + os.sep
_STDLIB_DIR = os.path.abspath(sysconfig.get_paths()['stdlib']) + os.sep
_INSTALLED = (f'{os.sep}site-packages{os.sep}', f'{os.sep}dist-packages{os.sep}')


def _frames(traceback) -> list[tuple[Any, str]]:
  """(frame, absolute path) of a `jax` traceback, innermost first, leaving out jax, the
  standard library and this file (the trace that runs the check)."""
  frames = [(f, os.path.abspath(f.file_name)) for f in getattr(traceback, 'frames', None) or ()]
  return [(f, p) for f, p in frames
          if not p.startswith((_JAX_DIR, _STDLIB_DIR)) and p != _THIS_FILE]


def _source_frame(traceback) -> Any:
  """The frame to name for a failing op: the innermost of user code (outside installed
  packages and jestimator), else (a canned model_fn) the innermost outside jax; or None."""
  frames = _frames(traceback)
  user = (f for f, p in frames if not p.startswith(_PACKAGE_DIR) and
          not any(d in p for d in _INSTALLED))
  return next(user, frames[0][0] if frames else None)


def _from_jestimator(traceback) -> bool:
  """Whether the op was written in jestimator itself (its innermost frame outside jax)."""
  frames = _frames(traceback)
  return bool(frames) and frames[0][1].startswith(_PACKAGE_DIR)


def _debug_message(failure, primitive, args) -> str:
  """'debug mode: <checkify's message> (in <function> at <file>:<line>)'."""
  message = str(failure).strip().rstrip('.')
  if isinstance(failure, checkify_rules.NaNError) and any(
      jnp.issubdtype(jnp.result_type(a), jnp.inexact) and bool(jnp.isnan(a).any())
      for a in args):
    message += (f'; an input of {primitive.name} already held a NaN (from the input data or a '
                'NaN constant)')
  frame = _source_frame(failure.traceback_info)
  where = (f' (in {frame.function_name} at {frame.file_name}:{frame.line_num})' if frame
           else '')
  return f'debug mode: {message}{where}'


class _CheckingTrace(jax_core.EvalTrace):
  """Eager evaluation that applies checkify's rule to each primitive as it runs.

  A rule returns the op's output and an `Error`, concrete here, so the first
  failing op raises at once, with the user's frames still on the stack. Index
  checks skip jestimator's own ops (feature columns drop out-of-range and
  padding ids by design, and check ids themselves).
  """

  def process_primitive(self, primitive, args, params, /):
    rule = checkify_rules.error_checks.get(primitive)
    if rule is None:
      return super().process_primitive(primitive, args, params)
    # A rule may fail on params it does not handle (jax 0.10's scatter rule on the
    # scatter-add of a take_along_axis gradient): the op then runs unchecked, and an
    # error of the op itself is raised again there.
    try:
      error, out = rule(checkify_rules.init_error, DEBUG_CHECKS, *args, **params)
    except Exception:  # noqa: BLE001
      return super().process_primitive(primitive, args, params)
    failure = error.get_exception()
    if failure is None or (isinstance(failure, checkify_rules.OOBError) and
                           _from_jestimator(failure.traceback_info)):
      return out  # feature columns drop out-of-range ids on purpose, as tf does
    raise DebugCheckError(_debug_message(failure, primitive, args))

  # custom_jvp/vjp functions (jax.nn.relu, softplus, ...): check the ops inside too.
  def process_custom_jvp_call(self, primitive, fun, jvp, tracers, /, *_, **__):
    with jax_core.set_current_trace(self):
      return fun.call_wrapped(*tracers)

  def process_custom_vjp_call(self, primitive, fun, fwd, bwd, tracers, /, *_, **__):
    with jax_core.set_current_trace(self):
      return fun.call_wrapped(*tracers)


def debug_step(fn: Callable, in_shardings: Any, out_shardings: Any) -> Callable:
  """`fn` run eagerly with every op checked (`_CheckingTrace`); its arguments and outputs
  placed with these shardings (pytree prefixes), as the jitted step would place them."""

  def run(*args):
    args = jax.device_put(args, tuple(in_shardings))  # numpy batches too, as jit would
    with jax.disable_jit(), jax_core.set_current_trace(_CheckingTrace()):
      out = fn(*args)
    return jax.device_put(out, out_shardings)

  return run


class Runner:
  """Holds the mesh, the shardings and the jitted (or, debugging, eager) steps of one
  model_fn module."""

  def __init__(self, module, mesh: Mesh, data_axis: str, streams: Sequence[str],
               accumulation_steps: int = 1, partition_rules=None, runner: str = 'jit',
               debug: bool = False):
    if runner not in ('jit', 'shard_map'):
      raise ValueError(f"RunConfig.runner must be 'jit' or 'shard_map', got {runner!r}.")
    if runner == 'shard_map' and partition_rules is not None:
      raise ValueError('the shard_map runner replicates the train state (data parallel); '
                       f'partition_rules={partition_rules!r} needs the jit runner.')
    if runner == 'shard_map' and debug:
      raise ValueError("debug mode runs the jit runner's steps eagerly; use runner='jit' (the "
                       "default) with debug=True.")
    if debug:
      logger.warning('RunConfig(debug=True): every step runs eagerly, op by op, with NaN, '
                     'division and index checks: expect it to be orders of magnitude slower '
                     'than compiled steps. For debugging only.')
    self.kind = runner
    self.debug = debug
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

  def _compile(self, fn: Callable, in_shardings, out_shardings, donate_argnums=()) -> Callable:
    """`jax.jit(fn)` with these shardings; in debug mode `fn` runs eagerly and checked."""
    if self.debug:
      return debug_step(fn, in_shardings, out_shardings)
    return jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                   donate_argnums=donate_argnums)

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
    fn = self._compile(init, (self._repl, self._batch, self._batch), shardings)
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
      span = (self._repl, self._repl) if stacked else ()  # multi_step's offset, n
      self._train[key] = self._compile(
          steps.make_multi_step(step) if stacked else step,
          (state_shardings, self._repl, self._repl, self._repl, batch, batch, *span),
          (state_shardings, self._repl, self._repl, self._repl), donate_argnums=(0, 1, 2))
    return self._train[key]

  def _shard_map_train_step(self, optimizer, stacked: bool) -> Callable:
    """The same step as per-device code under `jax.shard_map` (explicit collectives)."""
    axis = (self.data_axis, self.mesh.shape[self.data_axis])
    step = steps.make_train_step(self.module, optimizer, self.streams, self.accumulation_steps,
                                 axis=axis)
    batch = P(None, self.data_axis) if stacked else P(self.data_axis)
    span = (P(), P()) if stacked else ()  # multi_step's offset, n
    mapped = jax.shard_map(steps.make_multi_step(step) if stacked else step, mesh=self.mesh,
                           in_specs=(P(), P(), P(), P(), batch, batch, *span),
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
      self._eval[key] = self._compile(
          step, (shardings, self._repl, self._repl, self._repl, self._batch, self._batch,
                 self._batch, self._repl, self._repl),
          (self._repl, self._repl, self._repl), donate_argnums=(2, 3))
    return self._eval[key]

  def predict_step(self, variables) -> Callable:
    """The jitted predict step for variables sharded as `variables` are."""
    shardings = shardings_of(variables)
    key = _key(shardings)
    if key not in self._predict:
      self._predict[key] = self._compile(
          steps.make_predict_step(self.module, self.streams),
          (shardings, self._repl, self._repl, self._batch, self._batch, self._repl),
          (self._batch, self._repl), donate_argnums=(2,))
    return self._predict[key]

  def zeros_like_shapes(self, shapes) -> Any:
    """Replicated zeros with the structure of `shapes` (metric accumulators)."""
    return jax.tree.map(
        lambda s: jax.device_put(np.zeros(s.shape, s.dtype), self._repl), shapes)

  def scalar(self, value, dtype) -> jax.Array:
    return jax.device_put(np.asarray(value, dtype), self._repl)

  def index(self, i: int) -> Any:
    """A small int input of a step (a batch index, a span's offset or length) as numpy:
    the step's replicated in_sharding places it (jit takes numpy for a fully replicated
    input with any number of processes). A `device_put` per batch cost ~0.3 ms, 10% of
    an eval step, and with several processes it is a blocking collective."""
    return np.int32(i)

  def empty_checks(self) -> checks.CheckSlot:
    """A replicated `CheckSlot` with no failure (threaded through the steps)."""
    return jax.device_put(checks.empty_slot(), self._repl)
