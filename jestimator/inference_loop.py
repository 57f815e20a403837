"""The evaluation and prediction loops: the host side of `evaluate` and `predict`.

Both feed padded, masked batches (`inputs/inference_feed.py`) to their
compiled step without waiting on the device (at most `MAX_INFLIGHT_STEPS`
queued) and run the call's hooks: values a hook requests (running metrics in
evaluate, this batch's prediction keys in predict) are fetched on its steps
only. A failed device check raises `InvalidInputError` at the end, naming
the first bad batch.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec as P

from jestimator.hooks.base import RunContext
from jestimator.hooks.hook_set import HookSet
from jestimator.inputs.inference_feed import padded_batches
from jestimator.inputs.pipeline import InputPipeline
from jestimator.reporting import logger, progress_bar
from jestimator.train_loop import MAX_INFLIGHT_STEPS
from jestimator.training import checks


class EvalResults(dict):
  """evaluate()'s results: a plain dict that renders as a small table in notebooks."""

  def _repr_html_(self) -> str:
    rows = ''.join(f'<tr><td style="text-align:left">{k}</td><td>{_fmt(v)}</td></tr>'
                   for k, v in sorted(self.items()))
    return f'<table><tr><th>metric</th><th>value</th></tr>{rows}</table>'


def _fmt(value) -> str:
  return f'{value:.6g}' if np.ndim(value) == 0 and np.issubdtype(
      np.asarray(value).dtype, np.number) else str(value)


def _stop(ctx: RunContext) -> bool:
  """A hook's stop ends the loop in one process; several processes must run the same
  batches (their steps are collective), so there it is reported and ignored."""
  if ctx.stop_requested and jax.process_count() > 1:
    logger.warning('A hook requested a stop during %s; with several processes every batch '
                   'still runs.', 'evaluation' if ctx.mode == 'eval' else 'prediction')
    ctx.stop_requested = False
  return ctx.stop_requested


def run_evaluation(estimator, runner, config, pipeline: InputPipeline, size: int,
                   variables, rng, global_step: int, first_placed, steps: int | None,
                   hooks: list) -> EvalResults:
  """Metric states accumulated over the input, computed: `loss`, the eval metrics and
  `global_step`."""
  features, labels = first_placed
  mask = runner.feed(np.ones(size, np.float32))
  shapes = runner.eval_metrics_shapes(variables, features, labels, mask)
  acc = runner.zeros_like_shapes(shapes)
  eval_step, first_flag = runner.eval_step(variables), runner.true
  checked = runner.empty_checks()
  ctx = RunContext(estimator, 0, variables, mode='eval')
  hook_set = HookSet(hooks, ctx, {'global_step', *shapes})
  hook_set.begin()

  def values_of(keys: set[str]) -> dict:
    values = {k: np.asarray(v)[()] for k, v in jax.device_get(
        {k: acc[k].compute() for k in keys if k in acc}).items()}
    if 'global_step' in keys:
      values['global_step'] = np.int64(global_step)
    return values

  total = steps if steps is not None else pipeline.num_batches
  inflight = collections.deque()
  with progress_bar(total, 'evaluate', 'batch', config.progress_bar) as bar:
    for i, (features, labels, mask, _) in enumerate(padded_batches(
        pipeline, runner, size, steps, config.prefetch_batches, True)):
      acc, checked, done = eval_step(variables, rng, acc, checked, features, labels, mask,
                                     first_flag, runner.index(i))
      first_flag = runner.false
      inflight.append(done)
      if len(inflight) > MAX_INFLIGHT_STEPS:
        inflight.popleft().block_until_ready()
      bar.update(1)
      due = hook_set.due(i + 1)
      hook_set.after_step(i + 1, variables, due, values_of(hook_set.keys(due)) if due else None)
      if _stop(ctx):
        break
  checks.raise_if_failed(checked, 'evaluate')
  results = EvalResults({k: np.asarray(v)[()] for k, v in jax.device_get(
      {k: m.compute() for k, m in acc.items()}).items()})
  results['global_step'] = np.int64(global_step)
  ctx.results = results
  hook_set.end(lambda keys: {k: results[k] for k in keys if k in results})
  return results


def run_prediction(estimator, runner, config, pipeline: InputPipeline, size: int, variables,
                   rng, hooks: list, available: set[str],
                   unbatch: Callable[[Any, int], Iterator[Any]]) -> Iterator[Any]:
  """Yields what `unbatch(predictions, n)` makes of each batch's predictions, in order."""
  predict_step = runner.predict_step(variables)
  checked = runner.empty_checks()
  ctx = RunContext(estimator, 0, variables, mode='infer')
  hook_set = HookSet(hooks, ctx, available)
  hook_set.begin()
  pending = collections.deque()
  with progress_bar(pipeline.num_batches, 'predict', 'batch', config.progress_bar) as bar:
    for i, (features, _, mask, n) in enumerate(padded_batches(
        pipeline, runner, size, None, config.prefetch_batches)):
      predictions, checked = predict_step(variables, rng, checked, features, mask,
                                          runner.index(i))
      pending.append((predictions, n))
      due = hook_set.due(i + 1)
      values = None
      if due:
        keys = hook_set.keys(due)
        tree = predictions if isinstance(predictions, dict) else {'predictions': predictions}
        tree = {k: tree[k] for k in keys}
        if jax.process_count() > 1:  # this process's own rows
          tree = multihost_utils.global_array_to_host_local_array(
              tree, runner.mesh, P(runner.data_axis))
        values = {k: np.asarray(v)[:n] for k, v in jax.device_get(tree).items()}
      hook_set.after_step(i + 1, variables, due, values)
      if len(pending) > 1:
        yield from unbatch(*pending.popleft())
      bar.update(1)
      if _stop(ctx):
        break
    while pending:
      yield from unbatch(*pending.popleft())
  checks.raise_if_failed(checked, 'predict')
  hook_set.end()


def unbatch(predictions, n: int, mesh, data_axis: str, transforms, predict_keys,
            single: bool) -> Iterator[Any]:
  """One batch's predictions on the host: this process's rows, padding stripped, the
  host transforms' postprocessing applied, `predict_keys` selected; per example if
  `single`."""
  if jax.process_count() > 1:  # this process's own rows of the global batch
    predictions = multihost_utils.global_array_to_host_local_array(
        predictions, mesh, P(data_axis))
  predictions = jax.tree.map(lambda x: np.asarray(x)[:n], jax.device_get(predictions))
  for transform in transforms:
    predictions = transform.postprocess(predictions)
  if predict_keys is not None:
    if not isinstance(predictions, dict):
      raise ValueError('predict_keys needs predictions to be a dict.')
    missing = [k for k in predict_keys if k not in predictions]
    if missing:
      raise ValueError(f'Expected to run at least one output from {sorted(predictions)}, '
                       f'provided {missing}.')
    predictions = {k: predictions[k] for k in predict_keys}
  if not single:
    yield predictions
    return
  for i in range(n):
    yield jax.tree.map(lambda x: x[i], predictions)
