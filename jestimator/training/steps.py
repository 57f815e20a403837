"""Pure step functions built from the model_fn module; the runner compiles them.

Each builder returns a function of explicit pytrees only (state, batch, mask),
so it runs the same under `jax.jit` on one CPU or a mesh of many devices.
Per-step randomness is `fold_in(state.rng, step)`, split into one key per Flax
RNG stream: it depends on the seed and the step, never on the device count.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from jestimator.metrics.mean import Mean
from jestimator.spec import EstimatorSpec, ModeKeys
from jestimator.training import checks
from jestimator.example_mask import mask_scope
from jestimator.training.train_state import TrainState


NAN_LOSS = 'NaN loss during training'  # the message of the loss check (NanLossDuringTrainingError)


def step_rngs(rng: jax.Array, step: jax.Array, streams: Sequence[str]) -> dict[str, jax.Array]:
  """One key per RNG stream for step `step`: `fold_in(fold_in(rng, step), i)`."""
  step_key = jax.random.fold_in(rng, step)
  return {name: jax.random.fold_in(step_key, i) for i, name in enumerate(streams)}


def _apply(module, variables, features, labels, mode, rngs) -> tuple[EstimatorSpec, dict]:
  """Runs the model_fn; returns the spec and the updated non-param collections."""
  mutable = [c for c in variables if c != 'params']
  if not mutable:
    return module.apply(variables, features, labels, mode, rngs=rngs), {}
  return module.apply(variables, features, labels, mode, rngs=rngs, mutable=mutable)


def _apply_checked(module, variables, features, labels, mode, rngs, at):
  """`_apply`, plus the first failure of the device checks the model_fn made, at step `at`."""
  with checks.collecting() as found:
    spec, updates = _apply(module, variables, features, labels, mode, rngs)
  return spec, updates, checks.first_failure(found, at)


def make_init_fn(module, streams: Sequence[str], optimizer: optax.GradientTransformation | None,
                 mode: str = ModeKeys.TRAIN) -> Callable:
  """`init(seed_key, features, labels) -> TrainState` at step 0.

  With `optimizer=None` (evaluate/predict from a fresh init) `opt_state` is ().
  """

  def init(seed_key, features, labels) -> TrainState:
    init_key, state_key = jax.random.split(seed_key)
    rngs = {'params': init_key, **step_rngs(init_key, 0, streams)}
    variables = dict(module.init(rngs, features, labels, mode))
    params = variables.pop('params', {})
    opt_state = optimizer.init(params) if optimizer is not None else ()
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
                      opt_state=opt_state, rng=state_key)

  return init


def abstract_spec(module, streams: Sequence[str], features, labels, mode: str) -> EstimatorSpec:
  """The spec of a traced (never executed) init call; its `optimizer` is static."""
  seed = jax.ShapeDtypeStruct((2,), jnp.uint32)

  def run(seed_key, f, l):
    rngs = {'params': seed_key, **step_rngs(seed_key, 0, streams)}
    return module.init_with_output(rngs, f, l, mode)[0]

  return jax.eval_shape(run, seed, features, labels)


def _micro_batches(tree: Any, k: int) -> Any:
  """`[B, ...]` leaves -> `[k, B/k, ...]`; micro-batch i holds examples i, i+k, ...

  Strided, so each device keeps its own examples (no data movement when the
  batch is sharded over the data axis).
  """
  return jax.tree.map(lambda x: jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1),
                      tree)


def _merge_across(metrics: dict, axis_name: str, size: int) -> dict:
  """Metric states of every device along `axis_name`, merged with their own `merge`.

  The gather is a psum of one-hot placed copies: its result is invariant over
  the axis (plain all_gather's is typed varying), so it can leave shard_map
  as replicated.
  """
  index = jax.lax.axis_index(axis_name)
  gathered = jax.tree.map(
      lambda x: jax.lax.psum(jnp.zeros((size,) + x.shape, x.dtype).at[index].set(x), axis_name),
      metrics)
  parts = [jax.tree.map(lambda x, i=i: x[i], gathered) for i in range(size)]
  return {k: functools.reduce(lambda a, b: a.merge(b), [p[k] for p in parts]) for k in metrics}


def make_train_step(module, optimizer: optax.GradientTransformation,
                    streams: Sequence[str], accumulation_steps: int = 1,
                    axis: tuple[str, int] | None = None) -> Callable:
  """`train_step(state, checked, metrics, reset, features, labels)`
  `-> (state, checked, loss, metrics)`.

  `checked` is a `checks.CheckSlot`: the first failed device check (the
  model_fn's, its heads' and feature columns', then a non-finite loss) and
  its global step. The host reads it only when it logs or saves, so a check
  costs no per-step sync yet a failing step is never checkpointed. `metrics`
  accumulates the metric states the spec declares in TRAIN (from the forward
  pass, before the update), restarting from this step's states when `reset`
  is True; the host reads them at log steps. With `accumulation_steps=k` the batch is split into
  k micro-batches (a `lax.scan`, so memory is one micro-batch's), their
  gradients averaged into one update: the update of the whole batch when the
  loss is a mean over examples.

  `axis=(name, size)` builds the per-device body for `shard_map` over that
  mesh axis: the loss differentiated is `pmean` of the local loss, so the
  gradient of the replicated parameters is the global mean with no further
  collective (under check_vma, the transpose of their implicit broadcast
  already sums over devices; a second pmean would give N times the gradient);
  metric states are all-gathered and merged, mutable collections averaged,
  and the lowest-numbered failing device's check kept. This assumes the
  loss is a mean over examples (a SUM-reduced loss would need psum), and
  draws dropout masks and batch statistics per device, so only
  deterministic, mean-loss models match the jit runner bit for bit.
  """

  def grads(params, model_state, features, labels, rngs, at):
    def loss_fn(p):
      spec, updates, failed = _apply_checked(module, {'params': p, **model_state}, features,
                                             labels, ModeKeys.TRAIN, rngs, at)
      loss = spec.loss if axis is None else jax.lax.pmean(spec.loss, axis[0])
      return loss, (updates, spec.eval_metrics, failed)

    (loss, (updates, metrics, failed)), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    if axis is not None:
      updates = jax.tree.map(lambda x: jax.lax.pmean(x, axis[0]), updates)
      metrics = _merge_across(metrics, *axis)
      failed = checks.agree(failed, axis[0])
    return loss, {**model_state, **updates}, metrics, g, failed

  def accumulated(params, model_state, features, labels, rngs, at):
    micro = _micro_batches((features, labels), accumulation_steps)
    micro_rngs = lambda i: {n: jax.random.fold_in(r, i) for n, r in rngs.items()}
    first = jax.tree.map(lambda x: x[0], micro)
    loss, model_state, metrics, g, failed = grads(params, model_state, *first, micro_rngs(0), at)

    def body(carry, xs):
      loss_sum, model_state, metrics, g_sum, failed = carry
      i, batch = xs
      loss, model_state, new, g, new_failed = grads(params, model_state, *batch,
                                                    micro_rngs(i), at)
      metrics = {k: metrics[k].merge(v) for k, v in new.items()}
      return (loss_sum + loss, model_state, metrics, jax.tree.map(jnp.add, g_sum, g),
              checks.merge(failed, new_failed)), None

    rest = jax.tree.map(lambda x: x[1:], micro)
    (loss, model_state, metrics, g, failed), _ = jax.lax.scan(
        body, (loss, model_state, metrics, g, failed), (jnp.arange(1, accumulation_steps), rest))
    scale = 1.0 / accumulation_steps
    return loss * scale, model_state, metrics, jax.tree.map(lambda x: x * scale, g), failed

  compute = grads if accumulation_steps == 1 else accumulated

  def train_step(state: TrainState, checked, metrics, reset, features, labels):
    rngs = step_rngs(state.rng, state.step, streams)
    if axis is not None:  # each device draws its own dropout masks
      rngs = {n: jax.random.fold_in(r, jax.lax.axis_index(axis[0])) for n, r in rngs.items()}
    loss, model_state, new_metrics, g, failed = compute(state.params, state.model_state,
                                                        features, labels, rngs, state.step)
    param_updates, opt_state = optimizer.update(g, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, param_updates),
        model_state=model_state, opt_state=opt_state)
    with checks.collecting() as found:
      checks.check(jnp.isfinite(loss), NAN_LOSS)
    failed = checks.merge(failed, checks.first_failure(found, state.step))
    checked = checks.merge(checked, failed)
    merged = {k: metrics[k].merge(v) for k, v in new_metrics.items()}
    metrics = jax.tree.map(lambda m, n: jnp.where(reset, n, m), merged, new_metrics)
    return new_state, checked, loss, metrics

  return train_step


def make_multi_step(train_step: Callable) -> Callable:
  """Up to K train steps in one dispatch, over rows of batches stacked `[K, B, ...]`.

  `multi_step(state, checked, metrics, reset, features, labels, offset, n)`
  runs `train_step` on rows `offset .. offset + n - 1` (a `fori_loop` with
  traced bounds: one executable for every span, so a log or save step inside
  a stacked element splits it into two dispatches, no host copy, no
  recompile). Same results as n calls of `train_step`; the loss returned is
  the last step's. The host dispatches once per K steps (TPUEstimator's
  iterations_per_loop, Keras' steps_per_execution).
  """

  def multi_step(state, checked, metrics, reset, features, labels, offset, n):
    def row(i):
      return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False),
                          (features, labels))

    loss_shape = jax.eval_shape(lambda *a: train_step(*a)[2], state, checked, metrics, reset,
                                *row(offset))

    def body(i, carry):
      state, checked, metrics, reset, _ = carry
      state, checked, loss, metrics = train_step(state, checked, metrics, reset, *row(i))
      return state, checked, metrics, jnp.zeros_like(reset), loss

    carry = (state, checked, metrics, reset, jnp.zeros(loss_shape.shape, loss_shape.dtype))
    state, checked, metrics, _, loss = jax.lax.fori_loop(offset, offset + n, body, carry)
    return state, checked, loss, metrics

  return multi_step


def make_eval_metrics_fn(module, streams: Sequence[str]) -> Callable:
  """`metrics(variables, rng, features, labels, mask) -> {name: metric state}`.

  Includes `loss` as a Mean of per-batch losses (tf.estimator's evaluate loss),
  which the padding mask does not touch: each batch counts once.
  """

  def metrics(variables, rng, features, labels, mask):
    with mask_scope(mask):
      spec, _ = _apply(module, variables, features, labels, ModeKeys.EVAL,
                       step_rngs(rng, 0, streams))
    out = dict(spec.eval_metrics)
    out['loss'] = Mean(total=spec.loss.astype(jnp.float32), count=jnp.ones((), jnp.float32))
    return out

  return metrics


def make_eval_step(metrics_fn: Callable) -> Callable:
  """`eval_step(variables, rng, acc, checked, features, labels, mask, first, batch)`
  `-> (acc, checked, done)`.

  Merges this batch's metric states into `acc` on device; `first` (a bool
  scalar) makes the batch's states the new accumulator, so one executable
  serves every batch and no metric needs a hand-written identity. `checked`
  keeps the first failed device check with its batch index `batch` (int32),
  read by the host after the last batch. `done` is a scalar the host can wait
  on to bound the queue (`acc` and `checked` are donated).
  """

  def eval_step(variables, rng, acc, checked, features, labels, mask, first, batch):
    with checks.collecting() as found:
      new = metrics_fn(variables, rng, features, labels, mask)
    checked = checks.merge(checked, checks.first_failure(found, batch))
    merged = {k: acc[k].merge(v) for k, v in new.items()}
    acc = jax.tree.map(lambda m, n: jnp.where(first, n, m), merged, new)
    return acc, checked, acc['loss'].count

  return eval_step


def make_predict_step(module, streams: Sequence[str]) -> Callable:
  """`predict_step(variables, rng, checked, features, mask, batch) -> (predictions, checked)`.

  Predictions keep the padding; `checked` keeps the first failed device check
  with its batch index `batch`, read by the host after the last batch.
  """

  def predict_step(variables, rng, checked, features, mask, batch) -> Any:
    with mask_scope(mask):
      spec, _, failed = _apply_checked(module, variables, features, None, ModeKeys.PREDICT,
                                       step_rngs(rng, 0, streams), batch)
    return spec.predictions, checks.merge(checked, failed)

  return predict_step
