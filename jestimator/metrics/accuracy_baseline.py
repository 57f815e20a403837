"""AccuracyBaseline: the accuracy of always predicting the majority class."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from jestimator.metrics.mean import Mean


@struct.dataclass
class AccuracyBaseline(Mean):
  """`max(m, 1 - m)` where `m` is the weighted mean of binary labels (tf.estimator's
  `accuracy_baseline`). `from_model_output(labels, weights=None)`, labels `[batch, ...]`
  in [0, 1]; the state is the label mean's, so merging stays exact.
  """

  @classmethod
  def from_model_output(cls, labels: jax.Array,
                        weights: jax.Array | None = None) -> 'AccuracyBaseline':
    return super().from_model_output(jnp.asarray(labels, jnp.float32), weights)

  def compute(self) -> jax.Array:
    mean = super().compute()
    return jnp.maximum(mean, 1.0 - mean)
