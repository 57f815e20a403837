"""Loss reduction for heads (tf.losses.Reduction semantics) and user `loss_fn`s.

`compute_weighted_loss` is where the evaluation padding mask meets the loss:
padded examples get weight 0, and SUM_OVER_BATCH_SIZE divides by the number
of *real* loss elements, so a padded last batch reduces exactly like the
partial batch tf.estimator would have seen.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jestimator.metrics.base import batch_weights
from jestimator.metrics.shapes import divide_no_nan
from jestimator.example_mask import example_mask


class Reduction:
  """How `compute_weighted_loss` reduces (the values of `tf.losses.Reduction`)."""

  SUM = 'sum'
  SUM_OVER_BATCH_SIZE = 'sum_over_batch_size'

  ALL = (SUM, SUM_OVER_BATCH_SIZE)


def validate_loss_reduction(loss_reduction: str) -> str:
  """Returns `loss_reduction` if heads support it (SUM or SUM_OVER_BATCH_SIZE)."""
  if loss_reduction not in Reduction.ALL:
    raise ValueError(f'Invalid loss_reduction: {loss_reduction!r}. Must be one of '
                     f'{Reduction.ALL} (jestimator.heads.Reduction).')
  return loss_reduction


def compute_weighted_loss(losses: jax.Array, weights: jax.Array | None = None,
                          reduction: str = Reduction.SUM_OVER_BATCH_SIZE) -> jax.Array:
  """Reduces per-element losses to a float32 scalar.

  Args:
    losses: `[batch, ..., d]` unreduced losses.
    weights: None, a scalar, `[batch, 1]` or `losses.shape`; broadcast to losses.
    reduction: SUM is `sum(w * l)`; SUM_OVER_BATCH_SIZE divides that by the
      number of loss elements (not by `sum(w)`), counting real examples only
      when an evaluation padding mask is active.
  """
  validate_loss_reduction(reduction)
  losses = jnp.asarray(losses, jnp.float32)
  total = jnp.sum(losses * batch_weights(losses, weights))
  if reduction == Reduction.SUM:
    return total
  mask = example_mask()
  if mask is None or losses.ndim == 0:
    return divide_no_nan(total, jnp.float32(losses.size))
  per_example = math.prod(losses.shape[1:])
  return divide_no_nan(total, jnp.sum(mask.astype(jnp.float32)) * per_example)


def add_regularization(loss: jax.Array, regularization_losses: Sequence[Any] | None) -> jax.Array:
  """`loss + sum(regularization_losses)` (tf.estimator's regularized training loss)."""
  if not regularization_losses:
    return loss
  return loss + regularization_loss(regularization_losses)


def regularization_loss(regularization_losses: Sequence[Any]) -> jax.Array:
  """The float32 scalar sum of regularization losses (each a scalar)."""
  return sum(jnp.reshape(jnp.asarray(r, jnp.float32), ()) for r in regularization_losses)


def _arg_names(fn: Callable) -> tuple[str, ...]:
  try:
    return tuple(inspect.signature(fn).parameters)
  except (TypeError, ValueError) as e:
    raise TypeError(f'loss_fn must be a function, got {fn!r}.') from e


def validate_loss_fn_args(loss_fn: Callable | None) -> Callable | None:
  """Checks `loss_fn(labels, logits[, features])`, as tf.estimator does."""
  if loss_fn is None:
    return None
  names = _arg_names(loss_fn)
  for required in ('labels', 'logits'):
    if required not in names:
      raise ValueError(f'loss_fn must contain argument: {required}. Given arguments: {names}')
  unexpected = sorted(set(names) - {'labels', 'logits', 'features'})
  if unexpected:
    raise ValueError(f'loss_fn has unexpected args: {unexpected}')
  return loss_fn


def call_loss_fn(loss_fn: Callable, labels: jax.Array, logits: jax.Array, features: Any,
                 expected_loss_dim: int) -> jax.Array:
  """Calls a user `loss_fn`; its result must be `[batch, ..., expected_loss_dim]`."""
  kwargs = {'features': features} if 'features' in _arg_names(loss_fn) else {}
  loss = jnp.asarray(loss_fn(labels=labels, logits=logits, **kwargs))
  expected = tuple(logits.shape[:-1]) + (expected_loss_dim,)
  if loss.shape != expected:
    raise ValueError(f'loss_fn must return an array of shape [D0, D1, ... DN, '
                     f'{expected_loss_dim}] = {expected} (logits shape {logits.shape}); '
                     f'got shape {loss.shape}.')
  return loss
