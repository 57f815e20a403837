"""The `input` item of a checkpoint: each process's input position, through orbax.

`InputPipeline.capture` takes the position (fingerprint, batch count, the
tf.data iterator state or grain state) before the save starts, so the
iterator may move on at once; this handler serialises and writes it (a
user's shuffle buffer can be tens of MB) on orbax's commit thread, into
`<step>/input/process_<i>`, and restores it into a pipeline when it is the
same input.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jestimator.inputs.pipeline import write_position


class InputHandler(ocp.AsyncCheckpointHandler):
  """Writes a captured input position into `<item dir>/process_<i>`, in the background.

  The position is captured by `InputPipeline.capture` before `save` is
  called (the iterator must not move meanwhile); serialising and writing it
  (a user's shuffle buffer can be tens of MB) runs on orbax's commit thread.
  """

  async def async_save(self, directory, args: 'InputSave'):
    captured = args.captured

    async def write():
      write_position(os.fspath(directory / f'process_{jax.process_index()}'), captured)

    return [ocp.future.CommitFutureAwaitingContractedSignals(write(), name='input_save')]

  def save(self, directory, args: 'InputSave') -> None:
    write_position(os.fspath(directory / f'process_{jax.process_index()}'), args.captured)

  def restore(self, directory, args: 'InputRestore') -> bool:
    path = directory / f'process_{jax.process_index()}'
    return args.pipeline.restore(os.fspath(path), args.step)


@ocp.args.register_with_handler(InputHandler, for_save=True)
@dataclasses.dataclass
class InputSave(ocp.args.CheckpointArgs):
  captured: dict


@ocp.args.register_with_handler(InputHandler, for_restore=True)
@dataclasses.dataclass
class InputRestore(ocp.args.CheckpointArgs):
  pipeline: Any
  step: int
