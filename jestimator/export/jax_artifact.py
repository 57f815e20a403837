"""A JAX-native serving artifact: the predict function as StableHLO, the variables beside it.

`export_jax(estimator, export_dir)` writes one directory:

  predict.jax_export   `jax.export`'s serialization of `predict(variables, features)`
                       (the model_fn in PREDICT mode, as `Estimator.predict` runs it),
                       lowered for cpu and cuda, with a symbolic batch dimension `b`
  variables/           the checkpoint's variables (`params`, batch statistics, ...), orbax
  signature.json       the input signature (feature names, dtypes, shapes with the batch
                       dimension as null), the prediction keys, the checkpoint it came from

The variables are an argument of the function, not constants folded into it:
the StableHLO stays small and one compiled function serves any checkpoint of
the model. They are stored with orbax (tensorstore, the checkpoints' own
format): readable by anyone with orbax, restorable straight onto a serving
mesh, and never pickled.

`load_jax(export_dir)(features) -> predictions` serves it with jax, numpy and
orbax only: no TensorFlow, Flax or jestimator model code. The loader half of
this file imports nothing from jestimator, so it also works copied into a
serving process on its own (the tests load it by file path with jestimator
made unimportable).

Host transforms (`Estimator(input_transforms=...)`, feature columns' string
lookups, a head's label vocabulary) are TF ops and cannot be StableHLO. The
artifact therefore takes the features *after* the transforms — what the
model_fn receives, the numbers its checkpoint's signature records — and
returns predictions *before* their `postprocess` (class ids, not class
names). Refusing would leave every feature-column model without a JAX
artifact although its whole numeric half exports; instead `signature.json`
names the transforms and an export warns. For raw strings in, class names
out, export a SavedModel (`Estimator.export_saved_model`).

Device checks (`je.check`) are not part of the artifact: serving does not
stop on a bad example.
"""

from __future__ import annotations

# The export half imports jestimator inside its functions: the loader half runs without it.
# pylint: disable=import-outside-toplevel

import json
import os
import shutil
import tempfile
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = 'jestimator.jax_artifact'
VERSION = 1
FUNCTION_FILE = 'predict.jax_export'
VARIABLES_DIR = 'variables'
SIGNATURE_FILE = 'signature.json'
BATCH = 'b'  # the symbolic batch dimension's name
DEFAULT_PLATFORMS = ('cpu', 'cuda')


def _path_name(path) -> str:
  """'a/b' for a pytree key path (jestimator.tree_paths' naming, kept local: no jestimator)."""
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path)


# -- export ----------------------------------------------------------------------------------


def export_jax(estimator, export_dir: str, checkpoint_path: str | None = None,
               platforms: Sequence[str] | None = None) -> str:
  """Writes the JAX artifact of `checkpoint_path` (default: the newest checkpoint, or the one
  `use_checkpoint` chose) into `export_dir`; returns its absolute path.

  `export_dir` must not exist (or be empty). Everything is written into a
  hidden temporary directory beside it and renamed at the end, so a failed
  export leaves nothing behind and a reader never sees half an artifact.
  `platforms`: what the StableHLO is lowered for; default cpu and cuda
  (cpu only, with a warning, if this machine cannot lower for cuda). With
  several processes each one builds the function, process 0 writes.
  """
  from jestimator.reporting import logger
  export_dir = os.path.abspath(os.fspath(export_dir))
  if jax.process_index() == 0:
    _check_free(export_dir)
  step, store = _checkpoint(estimator, checkpoint_path)
  features = _abstract_features(store.metadata(step)['signature']['features'], store.path(step))
  variables = store.variables_as_numpy(step)
  _check_variables(estimator, store.path(step), variables, features)
  exported = _export_predict(estimator, variables, features, platforms, logger)
  transforms = [type(t).__name__ for t in estimator._transforms]  # pylint: disable=protected-access
  if transforms:
    logger.warning(
        'export_jax: the Estimator has host transforms %s (TF ops, not in the artifact): '
        'the artifact takes the transformed features %s and returns predictions before '
        "the transforms' postprocess. Export a SavedModel to serve raw inputs.",
        transforms, sorted(_leaf_specs(features, 'features')))
  signature = _signature_json(estimator, store.path(step), step, features, exported, transforms)
  _write_on_process_0(export_dir, exported.serialize(), variables, signature)
  logger.info('Exported the JAX artifact of %s to %s.', store.path(step), export_dir)
  return export_dir


def _write_on_process_0(export_dir: str, function: bytes, variables: Any,
                        signature: dict) -> None:
  """Process 0 writes; with several processes the others wait for it (and fail if it
  failed), and process 0 reaches the barrier even when its write fails."""
  failure = None
  if jax.process_index() == 0:
    try:
      _write_atomically(export_dir, function, variables, signature)
    except Exception as e:  # pylint: disable=broad-except
      failure = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f'jestimator_export_jax:{export_dir}')
  if failure is not None:
    raise failure
  if not os.path.isdir(export_dir):
    raise RuntimeError(f'export_jax: process 0 did not write {export_dir} (see its log).')


def _check_free(export_dir: str) -> None:
  if os.path.exists(export_dir) and (not os.path.isdir(export_dir) or os.listdir(export_dir)):
    raise FileExistsError(f'export_jax: {export_dir!r} already exists and is not an empty '
                          'directory; export into a new directory.')


def _checkpoint(estimator, checkpoint_path: str | None):
  """(step, CheckpointStore) of the checkpoint to export."""
  from jestimator.checkpoint import CheckpointStore
  path = checkpoint_path or estimator.latest_checkpoint()
  if path is None:
    raise ValueError(f"Couldn't find trained model at {estimator.model_dir}: train first, or "
                     'pass checkpoint_path.')
  directory, name = os.path.split(os.path.normpath(os.path.abspath(os.fspath(path))))
  if not name.isdigit() or not os.path.isdir(path):
    raise ValueError(f'checkpoint_path {path!r} is not a checkpoint: expected '
                     "'<model_dir>/<step>', as latest_checkpoint() returns.")
  ours = estimator._checkpoints()  # pylint: disable=protected-access
  return int(name), ours if directory == ours.directory else CheckpointStore(directory, None,
                                                                             False)


def _abstract_features(signature: dict, path: str) -> Any:
  """The features the model was trained with, from the checkpoint's signature ({name:
  [shape, dtype]}), as ShapeDtypeStructs with a symbolic batch dimension: a flat dict
  (a name 'a/b' stays one key, as feature columns' host halves name their outputs), or
  one array for a model fed a bare array."""
  if any(len(shape) == 0 for shape, _ in signature.values()):
    raise ValueError(f'export_jax: the checkpoint {path} records a feature without a batch '
                     f'dimension ({signature}); every feature needs one.')
  (batch,) = jax.export.symbolic_shape(BATCH)
  specs = {name: jax.ShapeDtypeStruct((batch, *shape[1:]), np.dtype(dtype))
           for name, (shape, dtype) in signature.items()}
  if list(specs) == ['']:
    return specs['']
  return specs  # flat: feature columns' transformed features are named 'color/ids'


def _check_variables(estimator, path: str, variables: Any, features: Any) -> None:
  """Raises CheckpointMismatchError when the checkpoint is another model's (named variables),
  before anything is traced with them."""
  from jestimator.checkpoint_check import check_restorable
  from jestimator.spec import ModeKeys
  runner = estimator._runner  # pylint: disable=protected-access
  concrete = jax.tree.map(lambda s: jax.ShapeDtypeStruct((1, *s.shape[1:]), s.dtype), features)
  expected = runner.variable_shapes(concrete, None, ModeKeys.PREDICT)
  check_restorable(path, variables, expected, (), ())


def predict_function(estimator) -> Callable:
  """`predict(variables, features) -> predictions`: the Estimator's predict step (its
  model_fn in PREDICT mode, seeded RNG streams, an all-ones example mask) without the
  device checks. Pure: this is what `jax.export` lowers."""
  from jestimator.training import checks, steps
  runner = estimator._runner  # pylint: disable=protected-access
  step = steps.make_predict_step(runner.module, runner.streams)
  rng = np.asarray(jax.random.PRNGKey(estimator.config.seed), np.uint32)  # as predict seeds it

  def predict(variables, features):
    batch = jax.tree.leaves(features)[0].shape[0]
    mask = jnp.ones((batch,), jnp.float32)
    predictions, _ = step(variables, rng, checks.empty_slot(), features, mask, np.int32(0))
    return predictions

  return predict


def _export_predict(estimator, variables, features, platforms, logger) -> jax.export.Exported:
  """`jax.export` of the predict function for these variables and symbolic-batch features."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables)
  fn = jax.jit(predict_function(estimator))
  wanted = tuple(platforms or DEFAULT_PLATFORMS)
  try:
    return jax.export.export(fn, platforms=wanted)(abstract, features)
  except Exception as e:  # pylint: disable=broad-except
    if platforms is None and 'cuda' in wanted and 'cpu' in wanted:
      try:
        exported = jax.export.export(fn, platforms=('cpu',))(abstract, features)
      except Exception:  # pylint: disable=broad-except
        pass  # the same failure without cuda: report the first one below
      else:
        logger.warning('export_jax: lowering for cuda failed on this machine (%s); the '
                       'artifact runs on cpu only. Export on a GPU machine for cuda.',
                       str(e).split('\n')[0][:300])
        return exported
    raise ValueError(
        f'export_jax: could not export the predict function for platforms {list(wanted)} with '
        f'the batch dimension symbolic ({BATCH!r}); a model_fn that computes with the batch '
        f'size as a Python number cannot be exported batch-polymorphic. '
        f'{type(e).__name__}: {e}') from e


def _leaf_specs(tree: Any, bare: str) -> dict[str, dict]:
  """name -> {'shape': [None (the batch) or int, ...], 'dtype': str} of every leaf; a bare
  array is named `bare`."""
  def dim(d):
    return d if isinstance(d, int) else (None if str(d) == BATCH else str(d))
  return {_path_name(path) or bare: {'shape': [dim(d) for d in leaf.shape],
                                     'dtype': str(leaf.dtype)}
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _signature_json(estimator, checkpoint: str, step: int, features, exported,
                    transforms: list[str]) -> dict:
  model_fn = estimator._model_fn  # pylint: disable=protected-access
  outputs = jax.tree_util.tree_unflatten(exported.out_tree, exported.out_avals)
  return {
      'format': FORMAT, 'version': VERSION,
      'function': FUNCTION_FILE, 'variables': VARIABLES_DIR,
      'platforms': list(exported.platforms),
      'batch_dimension': BATCH,
      'features': _leaf_specs(features, 'features'),
      'predictions': _leaf_specs(outputs, 'predictions'),
      'host_transforms': transforms,
      'features_are': ('transformed: the host transforms ran before these features'
                       if transforms else 'raw: the model_fn reads them as given'),
      'checkpoint': checkpoint, 'global_step': step,
      'model_fn': getattr(model_fn, '__name__', repr(model_fn)),
      'jax_version': jax.__version__,
  }


def _write_atomically(export_dir: str, function: bytes, variables: Any, signature: dict) -> None:
  """Writes the three parts into a temporary sibling directory, then renames it."""
  parent = os.path.dirname(export_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(export_dir)}.tmp-', dir=parent)
  try:
    with open(os.path.join(tmp, FUNCTION_FILE), 'wb') as f:
      f.write(function)
    _write_variables(os.path.join(tmp, VARIABLES_DIR), variables)
    with open(os.path.join(tmp, SIGNATURE_FILE), 'w', encoding='utf-8') as f:
      json.dump(signature, f, indent=2)
    _check_free(export_dir)  # a concurrent export may have taken the name meanwhile
    os.rename(tmp, export_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _write_variables(path: str, variables: Any) -> None:
  """The numpy variables as an orbax checkpoint at `path` (this process alone writes)."""
  import orbax.checkpoint as ocp
  alone = ocp.options.MultiprocessingOptions(primary_host=jax.process_index(),
                                             active_processes={jax.process_index()})
  with ocp.StandardCheckpointer(multiprocessing_options=alone) as checkpointer:
    checkpointer.save(path, variables)


# -- load --------------------------------------------------------------------------------------


def load_jax(export_dir: str) -> Callable[[Any], Any]:
  """`predict(features) -> predictions` of an artifact written by `export_jax`.

  `features`: what the model_fn received (a flat dict of numpy arrays keyed as
  `signature.json` lists them; one array for a bare-array model), any batch
  size; names, trailing shapes and dtypes must match `signature.json`
  (checked on the host, the feature named). Returns the model's predictions
  (a dict, or one array) as numpy. Needs jax, numpy and orbax only; compiles
  once per batch size.
  """
  import orbax.checkpoint as ocp  # imported when used: a second of import time
  export_dir = os.fspath(export_dir)
  signature = read_signature(export_dir)
  with open(os.path.join(export_dir, signature['function']), 'rb') as f:
    exported = jax.export.deserialize(bytearray(f.read()))
  with ocp.StandardCheckpointer() as checkpointer:
    variables = jax.device_put(checkpointer.restore(
        os.path.join(os.path.abspath(export_dir), signature['variables'])))
  call = jax.jit(exported.call)
  expected = signature['features']

  def predict(features: Any) -> Any:
    features = jax.tree.map(np.asarray, features)
    _check_features(expected, features, signature['host_transforms'])
    return jax.tree.map(np.asarray, jax.device_get(call(variables, features)))

  predict.signature = signature
  return predict


def read_signature(export_dir: str) -> dict:
  """The `signature.json` of an artifact (checked to be one this loader reads)."""
  path = os.path.join(os.fspath(export_dir), SIGNATURE_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{export_dir!r} is not a JAX artifact: it has no {SIGNATURE_FILE} '
                            '(write one with Estimator.export_jax).')
  with open(path, encoding='utf-8') as f:
    signature = json.load(f)
  if signature.get('format') != FORMAT or signature.get('version', 0) > VERSION:
    raise ValueError(f'{path}: format {signature.get("format")!r} version '
                     f'{signature.get("version")!r}; this loader reads {FORMAT!r} up to version '
                     f'{VERSION}.')
  return signature


def _check_features(expected: dict, features: Any, transforms: list[str]) -> None:
  """Raises ValueError naming the first feature that is missing, unexpected, or of another
  trailing shape or dtype; or features of different batch sizes."""
  got = {_path_name(p) or 'features': x  # a bare array: 'features', as export named it
         for p, x in jax.tree_util.tree_flatten_with_path(features)[0]}
  hint = (f' (the features after the host transforms {transforms}, not the raw inputs)'
          if transforms else '')
  shown = lambda name: f'feature {name!r}' if name != 'features' else 'features'
  for name in sorted(set(expected) | set(got)):
    if name not in got:
      raise ValueError(f'{shown(name)} is missing: the artifact takes {sorted(expected)}{hint}, '
                       f'got {sorted(got)}.')
    if name not in expected:
      raise ValueError(f'unexpected {shown(name)}: the artifact takes {sorted(expected)}{hint}.')
    want, x = expected[name], got[name]
    if (len(x.shape) != len(want['shape']) or list(x.shape[1:]) != want['shape'][1:]
        or str(x.dtype) != want['dtype']):
      fmt = lambda s, t: f'({", ".join(["batch", *map(str, s[1:])])}) {t}'
      raise ValueError(f'{shown(name)}: expected shape {fmt(want["shape"], want["dtype"])}, '
                       f'got {fmt(x.shape, x.dtype)}{hint}.')
  sizes = {x.shape[0] for x in got.values()}
  if len(sizes) > 1:
    raise ValueError(f'features have different batch sizes {sorted(sizes)}: every feature '
                     'needs the same leading dimension.')
