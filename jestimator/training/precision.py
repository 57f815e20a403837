"""Precision policies: parameters in float32, computation in bfloat16, outputs in float32.

`RunConfig(precision='mixed_bfloat16')` keeps the master parameters (and the
optimizer state) in float32, runs the model_fn on bfloat16 copies of the
parameters and floating features (the gradient flows back through the cast
to the float32 master), and returns the loss, metric states and predictions
in float32, like DeepMind's jmp. Mutable collections (batch statistics) keep
their dtype, so the train state's signature never changes between steps.
Tolerance: bfloat16 has an 8-bit mantissa; expect losses within ~1e-2
relative of float32 training, not bit equality.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jestimator.spec import EstimatorSpec


@dataclasses.dataclass(frozen=True)
class Policy:
  """Dtypes of the computation and of what leaves it (loss, metrics, predictions)."""

  compute_dtype: Any = jnp.float32
  output_dtype: Any = jnp.float32

  def cast(self, tree: Any, dtype) -> Any:
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x,
        tree)


POLICIES = {
    'float32': Policy(),
    'mixed_bfloat16': Policy(compute_dtype=jnp.bfloat16),
    'bfloat16': Policy(compute_dtype=jnp.bfloat16, output_dtype=jnp.bfloat16),
}


def get_policy(precision: str | Policy) -> Policy:
  if isinstance(precision, Policy):
    return precision
  if precision not in POLICIES:
    raise ValueError(f'RunConfig.precision must be one of {sorted(POLICIES)} or a Policy, '
                     f'got {precision!r}.')
  return POLICIES[precision]


class PolicyModule:
  """A model_fn module whose `apply` runs under a precision `Policy` (init is unchanged)."""

  def __init__(self, module, policy: Policy):
    self.module, self.policy = module, policy

  def init(self, *args, **kwargs):
    return self.module.init(*args, **kwargs)

  def init_with_output(self, *args, **kwargs):
    return self.module.init_with_output(*args, **kwargs)

  def apply(self, variables, features, labels, mode, **kwargs):
    policy = self.policy
    compute = {**variables, 'params': policy.cast(variables.get('params', {}),
                                                  policy.compute_dtype)}
    out = self.module.apply(compute, policy.cast(features, policy.compute_dtype), labels, mode,
                            **kwargs)
    spec, updates = (out, None) if isinstance(out, EstimatorSpec) else out
    spec = policy.cast(spec, policy.output_dtype)
    if updates is None:
      return spec
    updates = {k: jax.tree.map(lambda new, old: new.astype(old.dtype), v, variables[k])
               for k, v in updates.items()}
    return spec, updates
