"""`ModelDirView`: what an Estimator reads from its model_dir without running the model.

The checkpoint store and the questions users ask of it: the newest, best and
chosen checkpoint, variable names and values, where evaluations write. The
Estimator inherits it; it needs `_config` and `_pinned` set by the subclass.
"""

from __future__ import annotations

import os

import numpy as np

from jestimator.checkpoint import CheckpointStore


class ModelDirView:
  """Checkpoint access for an Estimator (mixed in: `Estimator(ModelDirView)`)."""

  _store: CheckpointStore | None = None
  _pinned: int | None = None  # the step evaluate/predict use (use_checkpoint)

  @property
  def model_dir(self) -> str:
    return self._config.model_dir

  def _checkpoints(self) -> CheckpointStore:
    if self._store is None:
      c = self._config
      self._store = CheckpointStore(
          c.model_dir, c.keep_checkpoint_max, c.async_checkpoints,
          keep_best=c.keep_best_checkpoints, best_metric=c.best_metric, best_mode=c.best_mode,
          keep_every_n_hours=c.keep_checkpoint_every_n_hours)
    return self._store

  def latest_checkpoint(self) -> str | None:
    """The path of the newest finished checkpoint (or of the one `use_checkpoint` chose),
    or None."""
    step = self._pinned or self._checkpoints().latest_step()
    return None if step is None else self._checkpoints().path(step)

  def best_checkpoint(self) -> str | None:
    """The best evaluated checkpoint still on disk (`RunConfig.keep_best_checkpoints`,
    `best_metric`, `best_mode`), or None."""
    step = self._checkpoints().best_step()
    return None if step is None else self._checkpoints().path(step)

  def use_checkpoint(self, path: str | None) -> None:
    """Makes evaluate/predict/latest_checkpoint use the checkpoint at `path` (e.g.
    `best_checkpoint()`) until the next train(); None returns to the newest."""
    name = None if path is None else os.path.basename(os.path.normpath(path))
    if path is not None and (os.path.dirname(os.path.abspath(os.path.normpath(path))) !=
                             self._checkpoints().directory or not name.isdigit()):
      raise ValueError(f'use_checkpoint: {path!r} is not a checkpoint of model_dir '
                       f'{self.model_dir!r}.')
    self._pinned = None if path is None else int(name)

  def get_variable_names(self) -> list[str]:
    """Names of the saved variables ('params/Dense_0/kernel', ..., 'global_step')."""
    return sorted(self._checkpoints().variables_by_name(self._trained_step(), False)) + [
        'global_step']

  def get_variable_value(self, name: str) -> np.ndarray:
    """The value of one saved variable, as numpy."""
    if name == 'global_step':
      return np.asarray(self._checkpoints().latest_step(), np.int64)
    saved = self._checkpoints().variables_by_name(self._trained_step())
    if name not in saved:
      raise ValueError(f'variable {name!r} not in the checkpoint; names: {sorted(saved)}.')
    return saved[name]

  def _trained_step(self) -> int:
    step = self._checkpoints().latest_step()
    if step is None:
      raise ValueError(f'no checkpoint in model_dir {self.model_dir}; train first.')
    return step

  def eval_dir(self, name: str | None = None) -> str:
    """Where evaluations write their TensorBoard scalars: `model_dir/eval[_name]`."""
    return os.path.join(self.model_dir, 'eval' if not name else f'eval_{name}')
