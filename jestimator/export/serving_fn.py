"""The model's PREDICT computation as one pure function of `(variables, features)`, for jax2tf.

`predict` runs the model_fn in the jitted predict step; a SavedModel needs the same
computation as a function of explicit inputs only, which `jax2tf` converts:

  fn(variables, features) -> {'predictions': [leaf, ...], 'extra': {name: array},
                              'check': int32 [2] (failed?, which check)}

`predictions` are the spec's prediction leaves in flatten order. Every export output array
(`EstimatorSpec.export_outputs`) that *is* a prediction leaf (the same traced array, as when
a head builds `PredictOutput(predictions)`) is served from that prediction -- after the host
transforms' postprocessing, like `predict` yields it; any other array travels in `extra`.
Each trace records this in a `Plan`. The model runs as predict runs it: the seed's RNG
streams at step 0, the precision policy, an all-real example mask, and its device checks
(`jestimator.check`) folded into `check` so the SavedModel can fail a request like predict.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from jestimator.example_mask import mask_scope
from jestimator.export.outputs import ExportOutput, serving_outputs
from jestimator.spec import ModeKeys
from jestimator.training import checks
from jestimator.training.precision import PolicyModule
from jestimator.training.steps import step_rngs
from jestimator.tree_paths import path_name


@dataclasses.dataclass
class Plan:
  """What one trace of the serving function found (static; arrays are not kept).

  predictions: the prediction tree's structure and each leaf's name ('classes', 'a/b').
  signatures: `{signature key: (output, {field: source})}`, a source being
    `('prediction', names)` -- the predictions that are this very array (a head's `classes`
    is its `class_ids`) -- or `('extra', name)`; the output object serves only its static
    parts (`signature_def`, `class_names`).
  """

  treedef: Any = None
  prediction_names: tuple[str, ...] = ()
  signatures: dict[str, tuple[ExportOutput, dict[str, tuple]]] = dataclasses.field(
      default_factory=dict)


def _predict_spec(module, variables, features, rngs):
  """(the PREDICT spec, the cast of the outputs), as `PolicyModule.apply` runs the model."""
  policy = None
  if isinstance(module, PolicyModule):
    module, policy = module.module, module.policy
    variables = {**variables,
                 'params': policy.cast(variables.get('params', {}), policy.compute_dtype)}
    features = policy.cast(features, policy.compute_dtype)
  mutable = [c for c in variables if c != 'params']
  if mutable:
    spec = module.apply(variables, features, None, ModeKeys.PREDICT, rngs=rngs,
                        mutable=mutable)[0]
  else:
    spec = module.apply(variables, features, None, ModeKeys.PREDICT, rngs=rngs)
  cast = (lambda tree: tree) if policy is None else (
      lambda tree: policy.cast(tree, policy.output_dtype))
  return spec, cast


def _batch_size(features) -> Any:
  leaves = jax.tree.leaves(features)
  return leaves[0].shape[0] if leaves else None


def make_serving_fn(module, streams: Sequence[str], seed: int) -> tuple[Callable, Plan]:
  """`(fn, plan)`: the pure serving function of the model_fn `module` (see the module
  docstring) and the `Plan` its latest trace filled in."""
  plan = Plan()

  def fn(variables, features):
    rngs = step_rngs(jax.random.PRNGKey(seed), 0, streams)
    batch = _batch_size(features)
    mask = None if batch is None else jnp.ones((batch,), jnp.float32)
    with mask_scope(mask), checks.collecting() as found:
      spec, cast = _predict_spec(module, variables, features, rngs)
    outputs = serving_outputs(spec.export_outputs, spec.predictions)
    flat, treedef = jax.tree_util.tree_flatten_with_path(spec.predictions)
    names = tuple(path_name(p) for p, _ in flat)
    by_id: dict[int, list[str]] = {}
    for name, (_, leaf) in zip(names, flat):
      by_id.setdefault(id(leaf), []).append(name)
    extra, signatures = {}, {}
    for key, output in outputs.items():
      fields = {}
      for field, array in output.arrays().items():
        if id(array) in by_id:
          fields[field] = ('prediction', tuple(by_id[id(array)]))
        else:
          fields[field] = ('extra', f'{key}/{field}')
          extra[f'{key}/{field}'] = array
      signatures[key] = (output, fields)
    plan.treedef, plan.prediction_names, plan.signatures = treedef, names, signatures
    slot = checks.first_failure(found, jnp.zeros((), jnp.int32))
    check = jnp.stack([(slot.step >= 0).astype(jnp.int32), slot.code.astype(jnp.int32)])
    return {'predictions': cast([leaf for _, leaf in flat]), 'extra': cast(extra),
            'check': check}

  return fn, plan
