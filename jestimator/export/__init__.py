"""Export for serving: TF SavedModel (jax2tf, with the host transforms inside), a
JAX-native artifact, receivers, signature outputs and exporters.

  spec = je.feature_column.make_parse_example_spec(columns)
  path = est.export_saved_model('exports', je.export.build_parsing_serving_input_receiver_fn(spec))

`saved_model` (imported by `Estimator.export_saved_model`) converts and writes; `receivers`
are what a SavedModel takes in; `outputs` the signatures it serves (the heads fill them).
The exporters and `load_jax` load on first use, so importing this package (the heads do,
for `outputs`) pulls in neither the Estimator nor orbax.
"""

from jestimator.export.outputs import (CLASSIFY_SERVING_KEY, DEFAULT_SERVING_KEY,
                                       PREDICT_SERVING_KEY, REGRESS_SERVING_KEY,
                                       ClassificationOutput, ExportOutput, PredictOutput,
                                       RegressionOutput)
from jestimator.export.receivers import (ServingInputReceiver,
                                         build_parsing_serving_input_receiver_fn,
                                         build_raw_serving_input_receiver_fn)

_LAZY = {'BestExporter': 'exporters', 'FinalExporter': 'exporters',
         'LatestExporter': 'exporters', 'load_jax': 'jax_artifact'}


def __getattr__(name: str):
  """`BestExporter`, `FinalExporter`, `LatestExporter` (`exporters`) and `load_jax`
  (`jax_artifact`), imported when first used."""
  if name not in _LAZY:
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
  import importlib  # pylint: disable=import-outside-toplevel
  return getattr(importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)


__all__ = [
    'BestExporter', 'CLASSIFY_SERVING_KEY', 'ClassificationOutput', 'DEFAULT_SERVING_KEY',
    'ExportOutput', 'FinalExporter', 'LatestExporter', 'PREDICT_SERVING_KEY', 'PredictOutput',
    'REGRESS_SERVING_KEY', 'RegressionOutput', 'ServingInputReceiver',
    'build_parsing_serving_input_receiver_fn', 'build_raw_serving_input_receiver_fn',
    'load_jax',
]
