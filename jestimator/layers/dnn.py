"""The DNN block of tf.estimator's DNN models, and tf.contrib's `stack`, in Flax.

`DNN` is the hidden part of DNNClassifier/Regressor: per hidden layer a Dense
(glorot-uniform kernel, as tf), the activation, dropout in training, then
batch norm (momentum 0.999, epsilon 1e-3, tf's settings). The logits layer is
not part of it, so wide & deep can add its own.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax


class DNN(nn.Module):
  """`[batch, d] -> [batch, hidden_units[-1]]` (the input unchanged if there are none).

  Attributes:
    hidden_units: units of each hidden layer, e.g. `[64, 32]`.
    activation: applied after each Dense (tf.estimator's `activation_fn`).
    dropout: probability of dropping a unit in training (None: no dropout);
      needs the 'dropout' RNG stream (an Estimator feeds it).
    batch_norm: batch normalization after each hidden layer; its statistics
      are the 'batch_stats' collection.
  """

  hidden_units: Sequence[int]
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  dropout: float | None = None
  batch_norm: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
      raise ValueError(f'DNN: dropout must be in [0, 1), got {self.dropout}.')
    for i, units in enumerate(self.hidden_units):
      x = nn.Dense(units, kernel_init=nn.initializers.glorot_uniform(),
                   name=f'hiddenlayer_{i}')(x)
      x = self.activation(x)
      if self.dropout is not None:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.999, epsilon=1e-3,
                         name=f'batchnorm_{i}')(x)
    return x


def fully_connected(inputs: jax.Array, num_outputs: int,
                    activation_fn: Callable | None = nn.relu, **dense_kwargs: Any) -> jax.Array:
  """tf.contrib.layers.fully_connected: a Dense layer created inline, then the activation."""
  x = nn.Dense(num_outputs, **dense_kwargs)(inputs)
  return x if activation_fn is None else activation_fn(x)


def stack(inputs: jax.Array, layer: Callable[..., jax.Array], stack_args: Sequence[Any],
          **kwargs: Any) -> jax.Array:
  """tf.contrib.layers.stack: `layer` applied once per entry of `stack_args`.

    logits = stack(features['x'], fully_connected, [50, 50, 1])

  An entry that is a tuple is spread as positional arguments. Call it inside a
  model_fn (or a compact method) so the layers it creates get parameters.
  """
  x = inputs
  for args in stack_args:
    x = layer(x, *(args if isinstance(args, tuple) else (args,)), **kwargs)
  return x
