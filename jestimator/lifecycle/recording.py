"""What train and evaluate leave behind besides checkpoints: TensorBoard scalars and the
metrics that rank checkpoints (`RunConfig.keep_best_checkpoints`).

train() gets a `SummarySaverHook` every `save_summary_steps` (loss, train
metrics, speed, learning rate under model_dir, as tf.estimator wrote them);
each evaluation writes its results under `eval_dir(name)` at the evaluated
checkpoint's step. `RunConfig.best_metric` ranks the unnamed evaluations
('accuracy'), or a named one as '<name>/<metric>' ('holdout/accuracy').
"""

from __future__ import annotations

import os

from jestimator import summary
from jestimator.config import RunConfig
from jestimator.hooks.summary_saver import SummarySaverHook


def default_train_hooks(config: RunConfig) -> list:
  """The hooks every train() runs besides the user's and the model_fn's."""
  if not config.save_summary_steps:
    return []
  return [SummarySaverHook(save_steps=config.save_summary_steps)]


def _ranks(config: RunConfig, name: str | None) -> str | None:
  """The metric of these results that ranks checkpoints, or None."""
  if not config.keep_best_checkpoints:
    return None
  prefix, _, metric = config.best_metric.rpartition('/')
  return metric if (prefix or None) == name else None


def record_evaluation(estimator, results: dict, name: str | None,
                      checkpoint_path: str | None) -> None:
  """Writes `results` for TensorBoard and, for a checkpoint of this model_dir, records
  the ranking metric for best-checkpoint retention."""
  step = int(results['global_step'])
  summary.write_eval_results(estimator.model_dir, os.path.basename(estimator.eval_dir(name)),
                             step, results)
  metric = _ranks(estimator.config, name)
  ours = checkpoint_path is None or os.path.dirname(os.path.normpath(os.path.abspath(
      checkpoint_path))) == os.path.abspath(estimator.model_dir)
  if metric is not None and ours and step:
    if metric not in results:
      raise ValueError(f'RunConfig.best_metric {estimator.config.best_metric!r}: the '
                       f'evaluation has no {metric!r}; its metrics are {sorted(results)}.')
    estimator._checkpoints().record_metrics(step, {estimator.config.best_metric: results[metric]})  # pylint: disable=protected-access
