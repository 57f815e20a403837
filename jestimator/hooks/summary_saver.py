"""`SummarySaverHook`: the train scalars TensorBoard shows, on a step or time cadence.

tf.estimator's SummarySaverHook saved whatever `tf.summary` ops the graph
held. A compiled JAX step has no summary ops, so this hook writes a fixed,
useful set instead: `loss` and every scalar train metric (the values the
loop fetches for it with its own log sync: it requests `'*'`), speed
(`global_step/sec`, `examples/sec`, measured between its own writes, so the
first write has none), and the optimizer's `learning_rate` when the optax
state exposes one (`optax.inject_hyperparams`), read on write steps only.
The train loop adds one to every train() when `RunConfig.save_summary_steps`
is set; the files go to `model_dir`, where `je.summary.read_scalars` and
`je.plot_history` read them back.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import jax

from jestimator import summary
from jestimator.hooks.base import Hook, Request, RunContext
from jestimator.reporting import logger


def find_learning_rate(opt_state: Any) -> Any | None:
  """The first `hyperparams['learning_rate']` in an optax state (as `inject_hyperparams`
  keeps it), searched depth-first through chains and wrappers; None if there is none."""
  has_hyperparams = lambda node: isinstance(getattr(node, 'hyperparams', None), Mapping)
  for node in jax.tree.leaves(opt_state, is_leaf=has_hyperparams):
    if has_hyperparams(node) and 'learning_rate' in node.hyperparams:
      return node.hyperparams['learning_rate']
  return None


class SummarySaverHook(Hook):
  """Writes loss, train metrics, speed and learning rate every N steps or seconds.

  Args (tf.estimator's names):
    save_steps: write on global steps that are multiples of this.
    save_secs: write at most every this many seconds instead.
    output_dir: where (default: the estimator's model_dir).
    summary_writer: instead of output_dir, any object with
      `write_scalars(step, scalars)` (e.g. a `clu.metric_writers` writer).
    scaffold, summary_op: TF graph objects; they do not apply here (must be None).
  """

  def __init__(self, save_steps: int | None = None, save_secs: float | None = None,
               output_dir: str | None = None, summary_writer: Any = None,
               scaffold: Any = None, summary_op: Any = None):
    for name, value in (('scaffold', scaffold), ('summary_op', summary_op)):
      if value is not None:
        raise ValueError(
            f'SummarySaverHook: {name} does not apply in jestimator (there is no TF graph): '
            'the hook writes loss, the train metrics, speed and learning rate itself. '
            f'Leave {name}=None.')
    if summary_writer is not None and not callable(getattr(summary_writer, 'write_scalars',
                                                           None)):
      raise ValueError(
          'SummarySaverHook: summary_writer must be None (write TensorBoard events to '
          'output_dir) or have a write_scalars(step, scalars) method (e.g. a '
          f'clu.metric_writers writer); got {type(summary_writer).__name__}.')
    if (save_steps is None) == (save_secs is None):
      raise ValueError('SummarySaverHook: exactly one of save_steps and save_secs should be '
                       f'provided; got save_steps={save_steps!r}, save_secs={save_secs!r}.')
    self._request = Request('*', every_n_steps=save_steps, every_n_secs=save_secs)
    self._output_dir, self._summary_writer = output_dir, summary_writer
    self._dir: str | None = output_dir
    self._last: tuple[int, float] | None = None  # (step, time) of the previous write

  def begin(self, run_context: RunContext) -> None:
    if run_context.mode != 'train':
      raise ValueError(f'SummarySaverHook is a train hook, not for {run_context.mode!r}: '
                       'evaluate writes its metrics under model_dir/eval itself.')
    self._dir = self._output_dir or run_context.estimator.model_dir
    self._last = None

  def requests(self) -> Request:
    return self._request

  def after_step(self, run_context: RunContext) -> None:
    if not run_context.values or jax.process_index() != 0:
      return
    scalars = {k: v for k, v in run_context.values.items() if k != 'global_step'}
    scalars.update(self._speed(run_context))
    opt_state = getattr(run_context.state, 'opt_state', None)
    learning_rate = find_learning_rate(opt_state) if opt_state is not None else None
    if learning_rate is not None:
      scalars['learning_rate'] = jax.device_get(learning_rate)
    self._write(run_context.step, scalars)

  def _speed(self, run_context: RunContext) -> dict[str, float]:
    """global_step/sec and examples/sec since this hook's previous write ({} at the first)."""
    now, step, last = time.perf_counter(), run_context.step, self._last
    self._last = (step, now)
    if last is None or step <= last[0]:
      return {}
    rate = (step - last[0]) / max(now - last[1], 1e-9)
    speed = {'global_step/sec': rate}
    if run_context.examples_per_step:
      speed['examples/sec'] = rate * run_context.examples_per_step
    return speed

  def _write(self, step: int, scalars: dict[str, Any]) -> None:
    if self._summary_writer is not None:
      self._summary_writer.write_scalars(step, summary.numeric_scalars(scalars))
    else:  # unflushed: TensorBoard's writer thread writes it; `end`/`close` flush
      summary.write_scalars(self._dir, step, scalars, wait=False)

  def end(self, run_context: RunContext) -> None:
    self.close()

  def close(self) -> None:
    """Flushes this hook's event file. A failure is logged, not raised: it must neither
    cost train() its final checkpoint (saved after `end`) nor mask the loop's error."""
    if self._summary_writer is not None or self._dir is None:
      return
    try:
      summary.flush_pending(self._dir)
    except Exception as e:  # noqa: BLE001
      logger.warning('TensorBoard summaries in %s could not be written: %s', self._dir, e)


__all__ = ['SummarySaverHook', 'find_learning_rate']
