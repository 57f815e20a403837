"""Checkpoints under `model_dir`: an orbax `CheckpointManager` with four items.

  model     the Flax variables (`params` and mutable collections); all that
            evaluate/predict restore, so one set of variables serves all modes
  train     step, optimizer state, RNG key
  input     the input position per process: fingerprint, batch count, and
            the tf.data iterator state or grain state (`checkpoint_input.py`)
  metadata  JSON: global step, input signature, batches consumed, versions

orbax writes each step into a temporary directory and renames it when every
item is complete, so a crash mid-save never leaves a step that fails to load;
`latest_step()` only sees finished steps. Saves are asynchronous; the
input position is captured by the caller and written in the background. No
pickle.

Which steps stay (the newest n, the k best evaluated, one per n hours) is
decided by `checkpoint_retention.py`, at each save and after each recorded
evaluation (`record_metrics`); the metrics live in
`<model_dir>/checkpoint_metrics.json`.

Failures are named, not dumped: a step that cannot be read (truncated array
file, deleted or garbled metadata) raises `CheckpointReadError` naming it, and
`restore_newest` falls back to the previous step with a warning; a checkpoint
of another model or optimizer raises `CheckpointMismatchError`
(`checkpoint_check.py`); a full disk during a save raises
`CheckpointDiskFullError`, the previous steps intact.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import os
import shutil
from typing import Any, Callable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jestimator.checkpoint_check import CheckpointMismatchError, check_restorable
from jestimator.checkpoint_input import InputHandler, InputRestore, InputSave
from jestimator.checkpoint_retention import Retention, finished_steps
from jestimator.distribute.multiprocess import all_processes
from jestimator.reporting import logger
from jestimator.training.train_state import TrainState
from jestimator.tree_paths import path_name


class CheckpointReadError(RuntimeError):
  """A checkpoint step on disk could not be read (damaged, incomplete or missing files)."""


class CheckpointDiskFullError(OSError):
  """The disk filled up while a checkpoint was being saved; older steps are intact."""


def _short(error: BaseException) -> str:
  """`Type: first line` of an error, without tensorstore's long spec dump."""
  text = str(error).split(' [tensorstore_spec=')[0].strip().split('\n')[0]
  return f'{type(error).__name__}: {text[:500]}'


def _disk_full(error: BaseException | None) -> BaseException | None:
  """The error in `error`'s chain that says the disk is full (an OSError ENOSPC, or
  tensorstore's or TensorFlow's words for it); None if none does."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return error
    if any(w in str(error) for w in ('No space left on device', "os_error_code='28'",
                                     'Disk quota exceeded')):
      return error
    error = error.__cause__ or error.__context__
  return None


def _reads_step(method):
  """Store methods reading step `step`: any failure to read becomes a CheckpointReadError
  naming the step directory (a mismatch with the model stays what it is)."""

  @functools.wraps(method)
  def read(self, step, *args, **kwargs):
    try:
      return method(self, step, *args, **kwargs)
    except (CheckpointMismatchError, CheckpointReadError):
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointReadError(f'checkpoint {self.path(step)} could not be read: '
                                f'{_short(e)}') from e

  return read


class CheckpointStore:
  """The checkpoints of one model_dir.

  `keep` (newest), `keep_best` (by `best_metric`, `best_mode`) and
  `keep_every_n_hours` are the retention rules of `checkpoint_retention.py`.
  """

  def __init__(self, directory: str, keep: int | None = 5, async_save: bool = True, *,
               keep_best: int | None = None, best_metric: str = 'loss', best_mode: str = 'min',
               keep_every_n_hours: float | None = None):
    self.directory = os.path.abspath(directory)
    if os.path.exists(self.directory) and not os.path.isdir(self.directory):
      raise ValueError(f'model_dir {self.directory!r} is a file, not a directory: give '
                       'Estimator a directory path for its checkpoints.')
    self._retention = Retention(self.directory, keep, keep_best, best_metric, best_mode,
                                keep_every_n_hours)
    self._options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, create=True,
        preservation_policy=self._retention.policy)
    self._manager = self._new_manager()
    self._saving: int | None = None  # the step of the save in flight
    self._writer = False  # whether this store has saved (then it also deletes)
    self._inference = None  # ((step, mtime), (variables, metadata)) of the last restore

  def _new_manager(self) -> ocp.CheckpointManager:
    # Handlers named up front, so a fresh process reads the items' metadata too.
    handlers = {'model': ocp.StandardCheckpointHandler(),
                'train': ocp.StandardCheckpointHandler(),
                'input': InputHandler(), 'metadata': ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(self.directory, options=self._options, item_handlers=handlers)

  def latest_step(self) -> int | None:
    """The newest finished step on disk (re-read: another process may have written it)."""
    self.wait()
    self._manager.reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self.wait()
    self._manager.reload()
    return list(self._manager.all_steps())

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: TrainState, input_position: dict, metadata: dict) -> None:
    """Starts saving `state` and a captured input position at `step` (written in the
    background)."""
    self.wait()  # a failed previous save is reported here, with its own step
    self._writer = True
    # An older checkpoint of this number (set aside, or deleted by hand) was evaluated, not this.
    self._retention.record.update(forget=[step])
    args = ocp.args.Composite(
        model=ocp.args.StandardSave(state.variables),
        train=ocp.args.StandardSave(
            {'step': state.step, 'opt_state': state.opt_state, 'rng': state.rng}),
        input=InputSave(input_position),
        metadata=ocp.args.JsonSave(metadata))
    self._saving = step
    with self._reporting_disk_full():
      self._manager.save(step, args=args, force=True)

  def record_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Records the evaluation `metrics` of checkpoint `step` (its scalars, in
    `checkpoint_metrics.json`: they survive restarts and rank the best checkpoints).

    Call it on every process. A store that has saved then deletes the steps that
    no retention rule keeps, once the save in flight is on disk. A store that
    only reads (an evaluator job beside the trainer) only records, and the
    trainer applies the record at its next save: two processes deleting in one
    model_dir would race, and a reader may hold another RunConfig. Raises
    ValueError, recording nothing, when keep_best is set and `best_metric` is
    not a scalar of `metrics`.
    """
    scalars = self._retention.scalars(step, metrics)
    steps = self.all_steps()
    record = self._retention.record
    if step not in steps:
      logger.warning('The checkpoint of step %d is no longer in %s (deleted after it was '
                     'evaluated), so its metrics are not recorded.', step, self.directory)
      return
    record.update({step: scalars}, forget=set(record.steps()) - set(steps))
    if self._writer:
      self._delete_unkept(steps)

  def best_step(self) -> int | None:
    """The best evaluated step still on disk (by best_metric and best_mode); None if none
    of them was evaluated."""
    return self._retention.best(self.all_steps())

  def _delete_unkept(self, steps: list[int]) -> None:
    """Deletes, through the manager (process 0 deletes, all wait), the finished `steps` that
    no retention rule keeps; never the newest."""
    on_disk = [info for info in finished_steps(self.directory) if info.step in steps]
    doomed = self._retention.doomed(on_disk)
    for step in doomed:
      self._manager.delete(step)
    if doomed:
      logger.info('Deleted the checkpoints of steps %s (kept: %s).', doomed,
                  sorted(set(steps) - set(doomed)))
      self._retention.record.update(forget=doomed)

  @_reads_step
  def metadata(self, step: int) -> dict:
    return self._manager.restore(
        step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata

  @_reads_step
  def restore_state(self, step: int, abstract: TrainState) -> TrainState:
    """The whole TrainState, placed as `abstract`'s shardings say. A checkpoint of another
    model or optimizer raises CheckpointMismatchError naming the differences."""
    saved = self._manager.item_metadata(step)
    trees = (self.path(step), saved['model'], abstract.variables, saved['train']['opt_state'],
             abstract.opt_state)
    check_restorable(*trees)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          model=ocp.args.StandardRestore(abstract.variables),
          train=ocp.args.StandardRestore(
              {'step': abstract.step, 'opt_state': abstract.opt_state, 'rng': abstract.rng})))
    except ValueError as e:  # the same arrays, nested differently
      if 'tree structures do not match' not in str(e):
        raise
      check_restorable(*trees, empty_nodes=True)
      raise CheckpointMismatchError(
          f'The checkpoint {self.path(step)} holds the same arrays as this model and '
          f'optimizer, but nested differently ({_short(e)}). Restore it with the model_fn '
          'that wrote it, or train in a new model_dir.') from e
    variables = dict(restored.model)
    params = variables.pop('params', {})
    return TrainState(step=restored.train['step'], params=params, model_state=variables,
                      opt_state=restored.train['opt_state'], rng=restored.train['rng'])

  @_reads_step
  def restore_variables(self, step: int, abstract_variables: Any) -> Any:
    return self._manager.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(abstract_variables))).model

  @_reads_step
  def restore_input(self, step: int, pipeline) -> bool:
    """Moves `pipeline` to the position saved at `step` if it is the same input."""
    return self._manager.restore(
        step, args=ocp.args.Composite(input=InputRestore(pipeline, step))).input

  @_reads_step
  def abstract_variables(self, step: int, sharding=None) -> Any:
    """Shapes and dtypes of the saved variables (from checkpoint metadata), on `sharding`."""
    meta = self._manager.item_metadata(step)['model']
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), meta,
        is_leaf=lambda m: hasattr(m, 'shape') and hasattr(m, 'dtype'))

  def variables_as_numpy(self, step: int) -> Any:
    """The saved variables as host numpy arrays, whatever mesh wrote them."""
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(np.asarray,
                        self.restore_variables(step, self.abstract_variables(step, sharding)))

  def variables_by_name(self, step: int, values: bool = True) -> dict[str, Any]:
    """name ('params/Dense_0/kernel') -> numpy value, or its ShapeDtypeStruct."""
    tree = self.variables_as_numpy(step) if values else self.abstract_variables(step)
    return {path_name(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}

  @_reads_step
  def restore_for_inference(self, step: int, place: Callable[[Any], Any]) -> tuple[Any, dict]:
    """(variables, metadata) of `step`, the variables placed as `place(abstract)` says.

    A finished orbax step is immutable, so repeated evaluate/predict calls on
    the same checkpoint (a notebook loop) reuse the last restore while the
    step is unchanged on disk.
    """
    key = (step, os.stat(self.path(step)).st_mtime_ns)
    if self._inference is None or self._inference[0] != key:
      metadata = self.metadata(step)
      variables = self.restore_variables(step, place(self.abstract_variables(step)))
      self._inference = (key, (variables, metadata))
    return self._inference[1]

  # -- falling back from unreadable steps ---------------------------------------

  def restore_newest(self, restore: Callable[[int], Any], newest: int | None = None,
                     set_aside: bool = False) -> Any:
    """`restore(step)` for the newest step (at most `newest`) that can be read; None if
    there is no step at all.

    A step whose files are damaged (restore raises CheckpointReadError on any
    process) is skipped with a warning naming it and its error, and the
    previous step is tried. With `set_aside` (the writer, train()), the
    skipped steps are renamed `<step>.unreadable` so that new saves can take
    their numbers. Raises CheckpointReadError when no step can be read: never
    a silent start from scratch over existing checkpoints.
    """
    failed, steps = [], self.all_steps()
    if not steps:
      return None
    steps = sorted((s for s in steps if newest is None or s <= newest), reverse=True)
    for i, step in enumerate(steps):
      error = None
      try:
        result = restore(step)
      except CheckpointReadError as e:
        error = e
      if all_processes(error is None):
        if failed and set_aside:
          self._set_aside([s for s, _ in failed])
        return result
      error = error or CheckpointReadError(
          f'checkpoint {self.path(step)} could not be read by another process')
      if i + 1 < len(steps):
        logger.warning('%s; falling back to the previous checkpoint, step %d.', error,
                       steps[i + 1])
      failed.append((step, error))
    raise CheckpointReadError(
        f'No checkpoint in model_dir {self.directory!r} can be restored, so nothing resumes '
        f'from it (and training does not start from scratch over it): '
        + '; '.join(str(e) for _, e in failed) + '. Move the damaged step directories out '
        'of model_dir to start afresh there, or train into another model_dir.')

  def _set_aside(self, steps: list[int]) -> None:
    if jax.process_index() == 0:
      for step in steps:
        target = self.path(step) + '.unreadable'
        while os.path.exists(target):
          target += '+'
        os.rename(self.path(step), target)
        logger.warning('Moved the unreadable checkpoint %s to %s (delete it once you no longer '
                       'need it).', self.path(step), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('jestimator_checkpoint_set_aside')
    self._manager.reload()

  # -- saving ---------------------------------------------------------------------

  @contextlib.contextmanager
  def _reporting_disk_full(self):
    """Turns a full disk during a save into CheckpointDiskFullError naming the step and
    model_dir. The failed manager is replaced, so the store still reads older steps."""
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      full = _disk_full(e)
      if full is None or isinstance(e, CheckpointDiskFullError):
        raise
      step, self._saving = self._saving, None
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        pass  # it re-raises the same failure
      self._manager = self._new_manager()
      if jax.process_count() == 1 and step is not None:
        # Best effort (writes may still land): the unfinished step only takes space, and
        # orbax replaces what is left of it when it saves that step again.
        for tmp in glob.glob(glob.escape(self.path(step)) + '.orbax-checkpoint-tmp*'):
          shutil.rmtree(tmp, ignore_errors=True)
      newest = self._manager.latest_step()
      intact = (f'the newest is {self.path(newest)}, and train() resumes from it'
                if newest is not None else 'there is none')
      raise CheckpointDiskFullError(
          errno.ENOSPC,
          f'Disk full: saving the checkpoint of step {step} into model_dir '
          f'{self.directory!r} failed ({_short(full)}). The previous checkpoints are intact '
          f'({intact}). Free space on that disk, lower RunConfig.keep_checkpoint_max, or '
          'train into a model_dir on another disk.') from e

  def wait(self) -> None:
    """Blocks until background saves are on disk."""
    with self._reporting_disk_full():
      self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

