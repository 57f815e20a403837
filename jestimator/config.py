"""`RunConfig`: everything about *how* an Estimator runs, in one frozen value.

Names and defaults follow tf.estimator.RunConfig: checkpoints every 600 s
unless `save_checkpoints_steps` is given (giving both is an error), five kept,
a log line every 100 steps. Distribution is explicit here too: `mesh` (a
`jax.sharding.Mesh`) or `mesh_shape` (axis name -> size, one size may be -1);
by default one axis `data` over every device of every process.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
from jax.sharding import PartitionSpec

from jestimator.compile_cache import default_cache_dir

_DEFAULT_SECS = 600
_DEFAULT_LOG_STEPS = 100


class _Unset:
  def __repr__(self):
    return '<default>'


_UNSET = _Unset()


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """How to run: seed, checkpoint and log cadence, mesh, progress display.

  Attributes:
    model_dir: where checkpoints live; None -> a temporary directory.
    seed: seeds parameter init and every per-step RNG (`fold_in(key, step)`).
    save_checkpoints_steps: save every this many steps (exclusive with secs).
    save_checkpoints_secs: save when this many seconds passed (default 600).
    keep_checkpoint_max: how many checkpoints to keep (None keeps all).
    log_step_count_steps: log loss and speed every this many steps (default 100,
      rounded up to a multiple of steps_per_loop so a log never cuts a dispatch).
    mesh: an explicit `jax.sharding.Mesh`; it must have a `data_axis` axis.
    mesh_shape: axis name -> size for a mesh over all devices (if no `mesh`).
    data_axis: the mesh axis the batch is split on.
    rng_streams: Flax RNG stream names fed to the model_fn every step.
    async_checkpoints: write checkpoints in the background (orbax async).
    progress_bar: show tqdm bars for train (known total), evaluate, predict:
      True, False, or 'auto' (only in a terminal or a Jupyter notebook, never
      as carriage-return floods in CI logs).
    steps_per_loop: train steps per host dispatch (a loop over batches that
      tf.data stacks K at a time); logs and step-based checkpoints still land
      on their steps (a dispatch then runs part of a stacked element; with a
      Python iterable the steps before them run singly), hooks run once per
      loop.
    gradient_accumulation_steps: micro-batches per step; their gradients are
      averaged into one update (the batch must divide by it): the update of
      the whole batch for a mean loss; batch statistics update per micro-batch.
    partition_rules: how the train state is split over the mesh: None (data
      parallel, replicated), 'fsdp', or a list of (regex on the parameter
      path, PartitionSpec); see `jestimator.distribute.partitioning`.
    runner: 'jit' (GSPMD: jit with shardings) or 'shard_map' (the per-device
      step with explicit gradient pmean and metric merge; data parallel only;
      assumes a mean loss; batch statistics and dropout masks are then per
      device, so only deterministic models match 'jit' exactly).
    prefetch_batches: dispatches' inputs the background feeder keeps ready
      (pulled, converted, checked and placed on the mesh ahead of the loop).
    precision: 'float32', 'mixed_bfloat16' (float32 parameters, bfloat16
      compute, float32 loss/metrics/predictions) or a `training.precision.Policy`.
    save_summary_steps: write TensorBoard scalars (loss, train metrics, speed,
      learning rate) under model_dir every this many steps (None: never;
      default 100, rounded up to a multiple of steps_per_loop like the log).
    keep_best_checkpoints: also keep the k best evaluated checkpoints (ranked
      by `best_metric`, `best_mode` 'min' or 'max'), beside the newest
      `keep_checkpoint_max`; None keeps no extra ones.
    keep_checkpoint_every_n_hours: also keep one checkpoint per this many hours.
    debug: run model_fn eagerly (no jit: print, breakpoints and Python
      exceptions show the user's line) with `checkify` checks (NaN, division,
      index) that name the failing op's source line. Slow: for debugging only.
    compilation_cache_dir: JAX's persistent compilation cache directory
      (default: a `jestimator` folder in the user's cache dir; None disables).
  """

  model_dir: str | None = None
  seed: int = 0
  save_checkpoints_steps: int | None = None
  save_checkpoints_secs: float | None | _Unset = _UNSET
  keep_checkpoint_max: int | None = 5
  log_step_count_steps: int | None | _Unset = _UNSET
  mesh: jax.sharding.Mesh | None = None
  mesh_shape: Mapping[str, int] | None = None
  data_axis: str = 'data'
  rng_streams: tuple[str, ...] = ('dropout',)
  async_checkpoints: bool = True
  progress_bar: bool | str = 'auto'
  steps_per_loop: int = 1
  gradient_accumulation_steps: int = 1
  partition_rules: Sequence[tuple[str, PartitionSpec]] | str | None = None
  runner: str = 'jit'
  precision: Any = 'float32'
  prefetch_batches: int = 2
  save_summary_steps: int | None | _Unset = _UNSET
  keep_best_checkpoints: int | None = None
  best_metric: str = 'loss'
  best_mode: str = 'min'
  keep_checkpoint_every_n_hours: float | None = None
  debug: bool = False
  compilation_cache_dir: str | None | _Unset = _UNSET

  def __post_init__(self):
    secs = self.save_checkpoints_secs
    if self.save_checkpoints_steps is not None and secs not in (None, _UNSET):
      raise ValueError(
          'RunConfig: save_checkpoints_steps and save_checkpoints_secs cannot both be set '
          f'(got {self.save_checkpoints_steps} and {secs}).')
    if secs is _UNSET:
      secs = None if self.save_checkpoints_steps is not None else _DEFAULT_SECS
      object.__setattr__(self, 'save_checkpoints_secs', secs)
    if not isinstance(self.seed, int) or isinstance(self.seed, bool):
      raise TypeError(f'RunConfig: seed must be an int, got {self.seed!r}.')
    if self.progress_bar not in (True, False, 'auto'):
      raise ValueError(f"RunConfig: progress_bar must be True, False or 'auto', got "
                       f'{self.progress_bar!r}.')
    for name in ('steps_per_loop', 'gradient_accumulation_steps', 'prefetch_batches'):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        raise ValueError(f'RunConfig: {name} must be an int >= 1, got {getattr(self, name)!r}.')
    k = self.steps_per_loop  # checked above: defaults never cut a K-step dispatch
    for name in ('log_step_count_steps', 'save_summary_steps'):
      if getattr(self, name) is _UNSET:
        object.__setattr__(self, name, -(-_DEFAULT_LOG_STEPS // k) * k)
    if self.compilation_cache_dir is _UNSET:
      object.__setattr__(self, 'compilation_cache_dir', default_cache_dir())
    if self.best_mode not in ('min', 'max'):
      raise ValueError(f"RunConfig: best_mode must be 'min' or 'max', got {self.best_mode!r}.")
    for name in ('save_checkpoints_steps', 'keep_checkpoint_max', 'log_step_count_steps',
                 'save_summary_steps', 'keep_best_checkpoints'):
      value = getattr(self, name)
      if value is not None and (not isinstance(value, int) or value <= 0):
        raise ValueError(f'RunConfig: {name} must be a positive int or None, got {value!r}.')
    if self.mesh is not None and self.data_axis not in self.mesh.axis_names:
      raise ValueError(
          f'RunConfig: mesh axes {self.mesh.axis_names} do not include data_axis '
          f'{self.data_axis!r}.')
    if self.mesh_shape is not None:
      object.__setattr__(self, 'mesh_shape', dict(self.mesh_shape))
    object.__setattr__(self, 'rng_streams', tuple(self.rng_streams))
    if isinstance(self.partition_rules, list):
      object.__setattr__(self, 'partition_rules', tuple(tuple(r) for r in self.partition_rules))

  @classmethod
  def of(cls, config: 'RunConfig | None') -> 'RunConfig':
    """`config`, or the defaults for None; anything else is a TypeError."""
    if config is None:
      return cls()
    if not isinstance(config, cls):
      raise TypeError(f'config must be a je.RunConfig, got {type(config).__name__}: '
                      f'{config!r}.')
    return config

  def replace(self, **changes) -> 'RunConfig':
    """A copy with `changes`; setting one checkpoint cadence clears the other."""
    if 'save_checkpoints_steps' in changes and 'save_checkpoints_secs' not in changes:
      changes['save_checkpoints_secs'] = None if changes['save_checkpoints_steps'] else _UNSET
    if 'save_checkpoints_secs' in changes and 'save_checkpoints_steps' not in changes:
      changes['save_checkpoints_steps'] = None
    return dataclasses.replace(self, **changes)
