"""Checkpoints under `model_dir`: an orbax `CheckpointManager` with four items.

  model     the Flax variables (`params` and mutable collections); all that
            evaluate/predict restore, so one set of variables serves all modes
  train     step, optimizer state, RNG key
  input     the input position per process: fingerprint, batch count, and
            the tf.data iterator state or grain state (`inputs/pipeline.py`)
  metadata  JSON: global step, input signature, batches consumed, versions

orbax writes each step into a temporary directory and renames it when every
item is complete, so a crash mid-save never leaves a step that fails to load;
`latest_step()` only sees finished steps. Saves are asynchronous; the
input position is captured by the caller and written in the background. No
pickle.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jestimator.inputs.pipeline import write_position
from jestimator.training.train_state import TrainState


class _InputHandler(ocp.AsyncCheckpointHandler):
  """Writes a captured input position into `<item dir>/process_<i>`, in the background.

  The position is captured by `InputPipeline.capture` before `save` is
  called (the iterator must not move meanwhile); serialising and writing it
  (a user's shuffle buffer can be tens of MB) runs on orbax's commit thread.
  """

  async def async_save(self, directory, args: '_InputSave'):
    captured = args.captured

    async def write():
      write_position(os.fspath(directory / f'process_{jax.process_index()}'), captured)

    return [ocp.future.CommitFutureAwaitingContractedSignals(write(), name='input_save')]

  def save(self, directory, args: '_InputSave') -> None:
    write_position(os.fspath(directory / f'process_{jax.process_index()}'), args.captured)

  def restore(self, directory, args: '_InputRestore') -> bool:
    path = directory / f'process_{jax.process_index()}'
    return args.pipeline.restore(os.fspath(path), args.step)


@ocp.args.register_with_handler(_InputHandler, for_save=True)
@dataclasses.dataclass
class _InputSave(ocp.args.CheckpointArgs):
  captured: dict


@ocp.args.register_with_handler(_InputHandler, for_restore=True)
@dataclasses.dataclass
class _InputRestore(ocp.args.CheckpointArgs):
  pipeline: Any
  step: int


class CheckpointStore:
  """The checkpoints of one model_dir."""

  def __init__(self, directory: str, keep: int | None = 5, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest finished step on disk (re-read: another process may have written it)."""
    self._manager.wait_until_finished()
    self._manager.reload()
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    self._manager.wait_until_finished()
    self._manager.reload()
    return list(self._manager.all_steps())

  def path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: TrainState, input_position: dict, metadata: dict) -> None:
    """Starts saving `state` and a captured input position at `step` (written in the
    background)."""
    args = ocp.args.Composite(
        model=ocp.args.StandardSave(state.variables),
        train=ocp.args.StandardSave(
            {'step': state.step, 'opt_state': state.opt_state, 'rng': state.rng}),
        input=_InputSave(input_position),
        metadata=ocp.args.JsonSave(metadata))
    self._manager.save(step, args=args, force=True)

  def metadata(self, step: int) -> dict:
    return self._manager.restore(
        step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())).metadata

  def restore_state(self, step: int, abstract: TrainState) -> TrainState:
    """The whole TrainState, placed as `abstract`'s shardings say."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(abstract.variables),
        train=ocp.args.StandardRestore(
            {'step': abstract.step, 'opt_state': abstract.opt_state, 'rng': abstract.rng})))
    variables = dict(restored.model)
    params = variables.pop('params', {})
    return TrainState(step=restored.train['step'], params=params, model_state=variables,
                      opt_state=restored.train['opt_state'], rng=restored.train['rng'])

  def restore_variables(self, step: int, abstract_variables: Any) -> Any:
    return self._manager.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(abstract_variables))).model

  def restore_input(self, step: int, pipeline) -> bool:
    """Moves `pipeline` to the position saved at `step` if it is the same input."""
    return self._manager.restore(
        step, args=ocp.args.Composite(input=_InputRestore(pipeline, step))).input

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

  def wait(self) -> None:
    """Blocks until background saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
