"""FTRL-Proximal as an optax `GradientTransformation` (tf.keras.optimizers.legacy.Ftrl).

optax has no FTRL, and FTRL is what tf.estimator's linear models train with.
Per element, with accumulator `n` (starts at `initial_accumulator_value`) and
linear term `z` (starts at 0), for gradient `g`, learning rate `lr`, power
`p = learning_rate_power` (TF's ApplyFtrlV2 kernel, which Keras calls):

  g_s   = g + 2 * l2_shrinkage * w
  n'    = n + g**2
  z'    = z + g_s - (n'**(-p) - n**(-p)) / lr * w
  w'    = (sign(z') * l1 - z') / (n'**(-p) / lr + 2 * l2')   if |z'| > l1 else 0

where `l2' = l2 + beta / (2 * lr)`. The weights are a function of the state,
so the update needs `params` (`update(grads, state, params)`); it returns
`w' - w`, so `optax.apply_updates` lands on `w'`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class FtrlState(NamedTuple):
  """Per-parameter accumulator (sum of squared gradients) and linear term, plus a step count."""

  count: jax.Array
  accumulator: optax.Params
  linear: optax.Params


def ftrl(learning_rate: optax.ScalarOrSchedule, learning_rate_power: float = -0.5,
         initial_accumulator_value: float = 0.1, l1_regularization_strength: float = 0.0,
         l2_regularization_strength: float = 0.0,
         l2_shrinkage_regularization_strength: float = 0.0,
         beta: float = 0.0) -> optax.GradientTransformation:
  """FTRL with Keras' arguments and defaults (see the module docstring).

  Args:
    learning_rate: a float or an optax schedule of the step count.
    learning_rate_power: <= 0; -0.5 is the usual FTRL, 0 a fixed rate.
    initial_accumulator_value: >= 0, the accumulator's start.
    l1_regularization_strength, l2_regularization_strength: >= 0.
    l2_shrinkage_regularization_strength: >= 0, an L2 penalty on the
      gradient (magnitude shrinkage) rather than the stabilization L2.
    beta: >= 0, added to the L2 as `beta / (2 * lr)`.
  """
  for name, value in (('initial_accumulator_value', initial_accumulator_value),
                      ('l1_regularization_strength', l1_regularization_strength),
                      ('l2_regularization_strength', l2_regularization_strength),
                      ('l2_shrinkage_regularization_strength',
                       l2_shrinkage_regularization_strength), ('beta', beta)):
    if value < 0:
      raise ValueError(f'ftrl: {name} must be >= 0, got {value}.')
  if learning_rate_power > 0:
    raise ValueError(f'ftrl: learning_rate_power must be <= 0, got {learning_rate_power}.')
  power = -learning_rate_power

  def init(params) -> FtrlState:
    return FtrlState(
        count=jnp.zeros([], jnp.int32),
        accumulator=jax.tree.map(
            lambda p: jnp.full(jnp.shape(p), initial_accumulator_value, jnp.result_type(p)),
            params),
        linear=jax.tree.map(jnp.zeros_like, params))

  def update(grads, state: FtrlState, params=None):
    if params is None:
      raise ValueError('ftrl: the update needs params (FTRL computes the weights from its '
                       'state): call update(grads, state, params).')
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    l1 = l1_regularization_strength
    l2 = l2_regularization_strength + beta / (2.0 * lr)

    def leaf(g, w, n, z):
      g_s = g + 2.0 * l2_shrinkage_regularization_strength * w
      n_new = n + g * g
      scale, scale_new = (jnp.sqrt(n), jnp.sqrt(n_new)) if power == 0.5 else (n**power,
                                                                               n_new**power)
      z_new = z + g_s - (scale_new - scale) / lr * w
      w_new = jnp.where(jnp.abs(z_new) > l1,
                        (jnp.sign(z_new) * l1 - z_new) / (scale_new / lr + 2.0 * l2), 0.0)
      return (w_new - w).astype(w.dtype), n_new, z_new

    out = jax.tree.map(leaf, grads, params, state.accumulator, state.linear)
    pick = lambda i: jax.tree.map(lambda _, t: t[i], grads, out)
    return pick(0), FtrlState(optax.safe_increment(state.count), pick(1), pick(2))

  return optax.GradientTransformation(init, update)
