"""`TrainState`: the one pytree that a training step carries and a checkpoint holds."""

from __future__ import annotations

from typing import Any

import jax
from flax import struct


@struct.dataclass
class TrainState:
  """Everything that changes while training, as arrays.

  Attributes:
    step: int32 scalar, the global step (number of updates applied).
    params: the `params` collection of the model_fn's variables.
    model_state: the other (mutable) collections, e.g. `{'batch_stats': ...}`.
    opt_state: the optax optimizer state.
    rng: uint32[2] base key; step `s` uses `fold_in(rng, s)`.
  """

  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array

  @property
  def variables(self) -> dict:
    """The Flax variables dict: `{'params': ..., **model_state}`."""
    return {'params': self.params, **self.model_state}
