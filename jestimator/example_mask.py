"""The example mask of the batch being traced (evaluation padding).

Evaluation and prediction pad the last partial batch up to the static batch
size so nothing recompiles. While the runner traces the model_fn for such a
step it opens a `mask_scope`; `example_mask()` then returns a float32 `[batch]`
array, 1.0 for real examples and 0.0 for padding. Metrics built with
`jestimator.metrics` and the heads weight by it automatically; a hand-written
loss can multiply by it to stay exact on the last batch. Outside such a scope
(training, or user code run eagerly) it is None. This is trace-time scoping,
like `jax.named_scope`, not state: the mask itself is an explicit step input.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp

_MASK: contextvars.ContextVar = contextvars.ContextVar('jestimator_example_mask', default=None)


def example_mask() -> jax.Array | None:
  """The float32 `[batch]` mask of real (1.0) vs padded (0.0) examples, or None."""
  return _MASK.get()


@contextlib.contextmanager
def mask_scope(mask: jax.Array | None):
  """Makes `mask` the value of `example_mask()` while the body runs."""
  token = _MASK.set(mask)
  try:
    yield
  finally:
    _MASK.reset(token)


def masked_mean(values: jax.Array) -> jax.Array:
  """Mean of per-example `values` `[batch, ...]` over real examples only.

  Use it for a hand-written loss (`je.masked_mean(per_example_loss)`): in
  training it is the plain mean; on a padded evaluation batch it leaves the
  padding out, so evaluate's `loss` equals tf.estimator's on the last batch.
  """
  values = jnp.asarray(values)
  mask = example_mask()
  if mask is None:
    return jnp.mean(values)
  weights = jnp.broadcast_to(jnp.reshape(mask, mask.shape + (1,) * (values.ndim - 1)),
                             values.shape).astype(jnp.float32)
  total = jnp.sum(jnp.where(weights > 0, values, 0).astype(jnp.float32) * weights)
  return total / jnp.maximum(jnp.sum(weights), 1.0)
