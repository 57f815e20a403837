"""Lining up labels and predictions of the classification metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def align(labels: jax.Array, predictions: jax.Array, metric: str) -> tuple[jax.Array, jax.Array]:
  """`(labels, predictions)` of one shape; a trailing axis of size 1 on one side is dropped."""
  labels, predictions = jnp.asarray(labels), jnp.asarray(predictions)
  if labels.ndim == predictions.ndim + 1 and labels.shape[-1] == 1:
    labels = labels[..., 0]
  elif predictions.ndim == labels.ndim + 1 and predictions.shape[-1] == 1:
    predictions = predictions[..., 0]
  if labels.shape != predictions.shape:
    raise ValueError(f'{metric}: labels shape {labels.shape} does not match predictions shape '
                     f'{predictions.shape}.')
  return labels, predictions


def divide_no_nan(x: jax.Array, y: jax.Array) -> jax.Array:
  """x / y, and 0 where y == 0 (tf.math.divide_no_nan)."""
  safe = jnp.where(y == 0, jnp.ones_like(y), y)
  return jnp.where(y == 0, jnp.zeros_like(x / safe), x / safe)
