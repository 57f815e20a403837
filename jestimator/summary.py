"""TensorBoard scalars: written with TensorBoard's own writer, read back with its reader, plotted.

The layout is tf.estimator's, so `tensorboard --logdir model_dir` draws train
and eval curves on the same charts: train scalars (`loss`, train metrics,
`global_step/sec`, `examples/sec`, `learning_rate`) in `model_dir` itself,
each evaluation's metrics in `model_dir/eval` (or `eval_<name>`), tagged by
metric name at the evaluated checkpoint's global step. Early stopping reads
the eval files back (`read_scalars`), so its decision survives restarts.

The events are what `tf.summary.scalar` writes (a float32 tensor with the
scalars plugin's metadata), made by TensorBoard's `scalar_pb` and written by
its `EventFileWriter`, which queues records for its own thread. Not
`tf.summary`: its eager ops and flush cost ~2 ms of CPU per write point, a
fifth of a 112-step window of a dispatch-bound `steps_per_loop=16` run on 2
cores (measured); this costs ~0.1 ms and needs no TensorFlow ops.

Only process 0 writes. One writer per directory is kept open; a write is
flushed unless the caller passes `wait=False` (the train loop's summaries:
flushed every few seconds and at the end of train()). A writer is replaced
when its file disappears (a model_dir deleted and created again in the same
Python process).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from jestimator.tf_import import tf

_writers: dict[str, tuple[Any, str]] = {}  # abspath -> (EventFileWriter, its events file)
_lock = threading.Lock()
_FLUSH_SECS = 5  # how stale unflushed train scalars may get in a live TensorBoard


def _scalar_or_none(value: Any) -> float | None:
  """`value` as a float if it is a numeric scalar (Python, numpy or a 0-d array), else None."""
  if isinstance(value, (str, bytes)):
    return None
  try:
    array = np.asarray(value)
  except Exception:  # noqa: BLE001 - anything numpy cannot take is not a scalar
    return None
  if array.ndim != 0 or array.dtype.kind not in 'biuf':
    return None
  return float(array)


def numeric_scalars(scalars: Mapping[str, Any]) -> dict[str, float]:
  """The entries of `scalars` that are numeric scalars, as floats."""
  out = {}
  for tag, value in scalars.items():
    number = _scalar_or_none(value)
    if number is not None:
      out[str(tag)] = number
  return out


def _key(logdir: str) -> str:
  """The cache key of `logdir`'s writer: its absolute path (a URL as it is)."""
  logdir = os.fspath(logdir)
  return logdir if '://' in logdir else os.path.abspath(logdir)


def _exists(path: str) -> bool:
  return tf.io.gfile.exists(path) if '://' in path else os.path.exists(path)


def _writer(logdir: str):
  """The cached writer of `logdir`; a new one if there is none or its file is gone."""
  from tensorboard.summary.writer.event_file_writer import EventFileWriter  # pylint: disable=import-outside-toplevel

  key = _key(logdir)
  cached = _writers.get(key)
  if cached is not None and _exists(cached[1]):
    return cached[0]
  if cached is not None:
    try:
      cached[0].close()
    except Exception:  # noqa: BLE001 - the old file is gone; nothing to save
      pass
  suffix = f'.{uuid.uuid4().hex[:8]}.v2'  # names this writer's file among the others
  writer = EventFileWriter(logdir, max_queue_size=100, flush_secs=_FLUSH_SECS,
                           filename_suffix=suffix)
  _writers[key] = (writer, writer._file_name)  # pylint: disable=protected-access
  return writer


def write_scalars(logdir: str, step: int, scalars: Mapping[str, Any], *,
                  wait: bool = True) -> None:
  """Writes the numeric scalars of `scalars` at `step` into `logdir`'s event file.

  Non-scalar and non-numeric values are skipped. A no-op on processes other
  than 0. Flushed before it returns, unless `wait=False` (then within a few
  seconds, or at `flush_pending()`). A failed write raises at the next write
  or flush into that directory.
  """
  if jax.process_index() != 0:
    return
  numbers = numeric_scalars(scalars)
  if not numbers:
    return
  from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=import-outside-toplevel
  from tensorboard.plugins.scalar import summary_v2  # pylint: disable=import-outside-toplevel

  values = [summary_v2.scalar_pb(tag, value).value[0] for tag, value in numbers.items()]
  event = event_pb2.Event(wall_time=time.time(), step=int(step),
                          summary=summary_pb2.Summary(value=values))
  with _lock:
    writer = _writer(os.fspath(logdir))
    writer.add_event(event)
    if wait:
      writer.flush()


def flush_pending(logdir: str | None = None) -> None:
  """Flushes the open writer of `logdir` (None: every one), so the scalars written with
  `wait=False` are in their files; raises what its writer thread failed on."""
  with _lock:  # not racing `_writer` replacing (and closing) a writer
    if logdir is None:
      writers = [writer for writer, _ in _writers.values()]
    else:
      cached = _writers.get(_key(logdir))
      writers = [cached[0]] if cached is not None else []
    for writer in writers:
      writer.flush()


def write_eval_results(model_dir: str, eval_dir_name: str, step: int,
                       results: Mapping[str, Any]) -> None:
  """Writes an evaluation's scalar results (all but `global_step`) at `step` into
  `model_dir/<eval_dir_name>` ('eval' or 'eval_<name>'), tagged by metric name."""
  scalars = {k: v for k, v in results.items() if k != 'global_step'}
  write_scalars(os.path.join(os.fspath(model_dir), eval_dir_name), step, scalars)


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
  """The scalars of the event files directly in `logdir`: {tag: [(step, value), ...]}.

  Reads with TensorBoard's own reader (`EventAccumulator`): `tf.summary.scalar`
  tensors and tf1-style `simple_value`s alike. Sorted by step; for a step
  written twice (e.g. after a restart) the last value written wins. {} when
  the directory holds no events (or does not exist).
  """
  from tensorboard.backend.event_processing import event_accumulator as ea  # heavy import
  from tensorboard.util import tensor_util

  logdir = os.fspath(logdir)
  flush_pending(logdir)
  if not tf.io.gfile.isdir(logdir):
    return {}
  acc = ea.EventAccumulator(logdir, size_guidance={ea.TENSORS: 0, ea.SCALARS: 0},
                            purge_orphaned_data=False)
  acc.Reload()
  by_tag: dict[str, dict[int, float]] = {}
  for tag in acc.Tags()[ea.SCALARS]:  # tf1 `simple_value` summaries
    points = by_tag.setdefault(tag, {})
    for event in acc.Scalars(tag):
      points[int(event.step)] = float(event.value)
  for tag in acc.Tags()[ea.TENSORS]:  # tf.summary.scalar (TF2) writes 0-d tensors
    if acc.SummaryMetadata(tag).plugin_data.plugin_name != 'scalars':
      continue
    points = by_tag.setdefault(tag, {})
    for event in acc.Tensors(tag):
      points[int(event.step)] = float(tensor_util.make_ndarray(event.tensor_proto))
  return {tag: sorted(points.items()) for tag, points in sorted(by_tag.items()) if points}


def _runs(model_dir: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
  """{'train': scalars of model_dir, 'eval…': scalars of each model_dir/eval* folder}."""
  runs = {'train': read_scalars(model_dir)}
  if tf.io.gfile.isdir(model_dir):
    for name in sorted(tf.io.gfile.listdir(model_dir)):
      name = name.rstrip('/')
      if name.startswith('eval') and tf.io.gfile.isdir(os.path.join(model_dir, name)):
        runs[name] = read_scalars(os.path.join(model_dir, name))
  return {run: scalars for run, scalars in runs.items() if scalars}


def _metrics_to_plot(runs: dict, metrics: Sequence[str] | str | None) -> list[str]:
  """The tags to draw: `metrics` (checked), else every tag, `loss` first."""
  tags = sorted({tag for scalars in runs.values() for tag in scalars})
  if metrics is None:
    return sorted(tags, key=lambda t: (t != 'loss', t))
  metrics = [metrics] if isinstance(metrics, str) else list(metrics)
  unknown = [m for m in metrics if m not in tags]
  if unknown:
    raise ValueError(f'plot_history: no scalars named {unknown}; the summaries have {tags}.')
  return metrics


def _axes_for(plt, n: int, ax, figsize):
  """(figure, n axes): the caller's `ax` (one Axes, or n of them), else a new grid."""
  if ax is not None:
    axes = list(np.ravel(ax))
    if len(axes) != n:
      raise ValueError(f'plot_history: {n} metrics to draw but {len(axes)} axes given; pass '
                       f'metrics=[...] with one name per axes, or ax=None.')
    return axes[0].figure, axes
  cols = min(n, 3)
  rows = -(-n // cols)
  fig, grid = plt.subplots(rows, cols, figsize=figsize or (4.5 * cols, 3.2 * rows),
                           squeeze=False)
  axes = list(grid.ravel())
  for extra in axes[n:]:
    extra.set_visible(False)
  return fig, axes[:n]


def plot_history(model_dir: str, metrics: Sequence[str] | str | None = None, ax=None,
                 figsize: tuple[float, float] | None = None):
  """Draws train and eval scalars against the global step, one subplot per metric.

  Reads `model_dir` (train: loss, metrics, speed, learning rate) and every
  `model_dir/eval*` folder (one line per evaluation set). `metrics`: the tags
  to draw (default: all, `loss` first); `ax`: one matplotlib Axes per metric
  to draw into (default: a new figure of `figsize`). Returns the figure. In a
  notebook the new figure is closed before it is returned, so it shows once.

    fig = je.plot_history(estimator.model_dir, metrics=['loss', 'accuracy'])
    fig.savefig('history.png')
  """
  try:
    import matplotlib.pyplot as plt
  except ImportError as e:
    raise ImportError('plot_history needs matplotlib: pip install matplotlib') from e
  model_dir = os.fspath(model_dir)
  runs = _runs(model_dir)
  if not runs:
    raise ValueError(f'plot_history: no TensorBoard scalars in {model_dir!r} or its eval '
                     'folders; train with RunConfig(save_summary_steps=...) or evaluate first.')
  names = _metrics_to_plot(runs, metrics)
  fig, axes = _axes_for(plt, len(names), ax, figsize)
  for axis, tag in zip(axes, names):
    for run, scalars in runs.items():
      if tag in scalars:
        steps, values = zip(*scalars[tag])
        axis.plot(steps, values, label=run, marker='o' if run != 'train' else None,
                  markersize=3)
    axis.set_title(tag)
    axis.set_xlabel('global step')
    if sum(tag in scalars for scalars in runs.values()) > 1:
      axis.legend()
  fig.tight_layout()
  if ax is None and 'ipykernel' in sys.modules:
    plt.close(fig)  # else Jupyter shows it twice: once at the cell's end, once as its value
  return fig


__all__ = ['flush_pending', 'numeric_scalars', 'plot_history', 'read_scalars', 'write_eval_results', 'write_scalars']
