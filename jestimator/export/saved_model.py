"""`export_saved_model`: a TF SavedModel of the Estimator's PREDICT computation, for TF Serving.

The SavedModel holds the whole path a request takes, as TF ops:

  receiver tensors (e.g. serialized tf.Examples)
    -> the serving_input_receiver_fn's ops (parse_example)       raw features
    -> the Estimator's host transforms (feature columns, ...)    the model's features
    -> the model_fn, converted by jax2tf (one XlaCallModule op,  predictions, export outputs
       native serialization, batch dimension polymorphic; its
       variables are TF variables restored from the checkpoint)
    -> the host transforms' postprocessing (class names)         the signatures' outputs

and is written the way tf.estimator wrote it (a TF1 graph through
`tf.compat.v1.saved_model.Builder`): the signature method names and keys of
`ClassificationOutput`, `RegressionOutput` and `PredictOutput`, lookup tables initialized on
load, `as_text`, `assets.extra`. Loading it needs TensorFlow only: no JAX, no jestimator.

The module is lowered for CPU and CUDA (`PLATFORMS`); if a model cannot be lowered for CUDA
here the export falls back to CPU only, with a warning. The directory appears atomically:
it is written under a temporary name inside `export_dir_base` and renamed to the all-digit
timestamp when complete; a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging

import os
import shutil
import tempfile
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import jax2tf

from jestimator.checkpoint import CheckpointStore
from jestimator.export import host_graph
from jestimator.export.receivers import ServingInputReceiver
from jestimator.export.serving_fn import Plan, make_serving_fn
from jestimator.inputs.signature import Signature
from jestimator.reporting import logger
from jestimator.spec import ModeKeys
from jestimator.tree_paths import path_name

PLATFORMS = ('cpu', 'cuda')  # what the converted module is lowered for
_CHECK_MESSAGE = ('jestimator.check failed in the served model (check code {code}): '
                  'Estimator.predict on the same examples names the check and the value')


class _LoweringError(RuntimeError):
  """The conversion failed for these platforms (the export retries with CPU only)."""


def export_saved_model(estimator, export_dir_base: str, serving_input_receiver_fn: Callable,
                       assets_extra: Mapping[str, str] | None = None, as_text: bool = False,
                       checkpoint_path: str | None = None,
                       experimental_mode: str = ModeKeys.PREDICT) -> str:
  """Writes a SavedModel of `estimator` under `export_dir_base/<timestamp>`; returns its path.

  Args:
    estimator: a trained `je.Estimator`.
    export_dir_base: the directory the timestamped export goes into (created if needed).
    serving_input_receiver_fn: `() -> ServingInputReceiver`, e.g.
      `build_parsing_serving_input_receiver_fn(spec)`.
    assets_extra: `{destination path inside assets.extra: source file}` to copy along.
    as_text: write saved_model.pbtxt instead of saved_model.pb.
    checkpoint_path: the checkpoint to export; default the newest (or the one
      `use_checkpoint` chose).
    experimental_mode: only `ModeKeys.PREDICT` (a JAX train step is not a TF graph).

  Raises:
    ValueError: no checkpoint; the receiver's features miss a feature the model reads, or
      give one with another shape or dtype (named, before conversion).
  """
  if experimental_mode != ModeKeys.PREDICT:
    raise ValueError(f'export_saved_model: only experimental_mode=ModeKeys.PREDICT is '
                     f'supported, got {experimental_mode!r}.')
  if not callable(serving_input_receiver_fn):
    raise TypeError('export_saved_model: serving_input_receiver_fn must be a function '
                    f'returning a ServingInputReceiver, got {serving_input_receiver_fn!r}.')
  step, variables, signature = _checkpoint(estimator, checkpoint_path)
  os.makedirs(export_dir_base, exist_ok=True)
  temp = tempfile.mkdtemp(prefix='.temp-export-', dir=export_dir_base)
  try:
    written = os.path.join(temp, 'saved_model')
    build = lambda platforms: _write(estimator, written, serving_input_receiver_fn, variables,
                                     signature, as_text, platforms)
    try:
      build(PLATFORMS)
    except _LoweringError as e:
      logger.warning('export_saved_model: could not lower the model for %s (%s); exporting '
                     'for CPU only.', PLATFORMS, e.__cause__)
      shutil.rmtree(written, ignore_errors=True)
      build(('cpu',))
    _copy_assets_extra(written, assets_extra)
    export_dir = _rename_to_timestamp(written, export_dir_base)
  finally:
    shutil.rmtree(temp, ignore_errors=True)
  logger.info('SavedModel of global step %d written to %s.', step, export_dir)
  return export_dir


def _checkpoint(estimator, checkpoint_path: str | None) -> tuple[int, Any, dict]:
  """(step, variables as numpy, trained feature signature) of the checkpoint to export."""
  store = estimator._checkpoints()  # pylint: disable=protected-access
  pinned = estimator._pinned  # pylint: disable=protected-access
  if checkpoint_path is None and pinned is not None:
    checkpoint_path = store.path(pinned)
  read = lambda s, step: (step, s.variables_as_numpy(step), s.metadata(step))
  if checkpoint_path is not None:
    directory, name = os.path.split(os.path.normpath(os.path.abspath(checkpoint_path)))
    if not name.isdigit() or not os.path.isdir(checkpoint_path):
      raise ValueError(f'checkpoint_path {checkpoint_path!r} is not a checkpoint: expected '
                       "'<model_dir>/<step>', as latest_checkpoint() returns.")
    if directory != store.directory:
      store = CheckpointStore(directory, None, False)
    found = read(store, int(name))
  else:
    found = store.restore_newest(lambda step: read(store, step))
  if found is None:
    raise ValueError(f"Couldn't find trained model at {estimator.model_dir}.")
  step, variables, metadata = found
  return step, variables, Signature.from_json(metadata['signature']).features


def _write(estimator, export_dir: str, receiver_fn: Callable, variables: Any,
           signature: dict, as_text: bool, platforms: tuple[str, ...]) -> None:
  """Builds the serving graph and writes it with its variables to `export_dir`."""
  runner = estimator._runner  # pylint: disable=protected-access
  fn, plan = make_serving_fn(runner.module, runner.streams, estimator.config.seed)
  graph = tf.Graph()
  with graph.as_default():
    receiver = receiver_fn()
    if not isinstance(receiver, ServingInputReceiver):
      raise TypeError('serving_input_receiver_fn must return a je.export.ServingInputReceiver, '
                      f'got {type(receiver).__name__}.')
    transforms = host_graph.serving_transforms(
        estimator._transforms, signature)  # pylint: disable=protected-access
    features = host_graph.apply_transforms(receiver.features, transforms)
    features, missing = host_graph.model_features(features, signature)
    _trace(fn, variables, features, missing, signature)
    feeds, tf_variables = _variables(variables)
    try:
      out = jax2tf.convert(
          fn, polymorphic_shapes=[None, jax.tree.map(lambda _: 'b, ...', features)],
          with_gradient=False, native_serialization_platforms=platforms)(tf_variables, features)
    except Exception as e:  # noqa: BLE001 -- retried with CPU only; raised again there
      if platforms == ('cpu',):
        raise
      raise _LoweringError(str(e)) from e
    with _quiet_tf_logger():
      signature_defs = _signature_defs(plan, out, receiver.receiver_tensors, transforms)
    init = tf.group(tf.compat.v1.tables_initializer(),
                    tf.compat.v1.local_variables_initializer(), name='serving_init')
    with tf.compat.v1.Session(graph=graph) as session, _quiet_tf_logger():
      session.run(tf.compat.v1.global_variables_initializer(), feeds)
      builder = tf.compat.v1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(
          session, [tf.saved_model.SERVING], signature_def_map=signature_defs,
          assets_collection=tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS),
          main_op=init, strip_default_attrs=True)
      builder.save(as_text=as_text)


@contextlib.contextmanager
def _quiet_tf_logger():
  """TF1's builder logs deprecation warnings (with site-packages paths) and its temp
  paths at INFO: noise to a user, who gets jestimator's own line instead."""
  tf_logger = tf.get_logger()
  level = tf_logger.level
  tf_logger.setLevel(logging.ERROR)
  try:
    yield
  finally:
    tf_logger.setLevel(level)


def _trace(fn: Callable, variables: Any, features: Any, missing: list[str],
           signature: dict) -> None:
  """Traces the model on the serving features' shapes (batch symbolic) before converting:
  a feature the model reads but the receiver lacks is named here."""
  batch = jax.export.symbolic_shape('b')[0]
  abstract = jax.tree.map(
      lambda t: jax.ShapeDtypeStruct((batch, *t.shape[1:]), t.dtype.as_numpy_dtype), features)
  try:
    jax.eval_shape(fn, variables, abstract)
  except Exception as e:  # noqa: BLE001 -- any failure, once a trained feature is missing
    if not missing:
      raise
    served = sorted(features) if isinstance(features, dict) else ['']
    raise ValueError(
        f"export_saved_model: the serving_input_receiver_fn's features miss {missing[0]!r}, "
        f'which the model was trained with and reads (its features after the host '
        f'transforms: {sorted(signature)}; served: {served}).') from e
  if missing:
    logger.info('export_saved_model: trained features %s are not served; the model does not '
                'read them in PREDICT mode.', missing)


def _variables(variables: Any) -> tuple[dict, Any]:
  """(initializer feeds, the variables as TF variables): values are fed once, not stored in
  the graph."""
  feeds = {}

  def make(path, value):
    value = np.asarray(value)
    initial = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
    feeds[initial] = value
    name = path_name(path).replace(':', '_') or 'variable'
    return tf.Variable(initial, name=name, trainable=False)

  return feeds, jax.tree_util.tree_map_with_path(make, variables)


def _signature_defs(plan: Plan, out: dict, receiver_tensors: dict, transforms) -> dict:
  """tf.estimator's signature map: each export output over its TF tensors; outputs the
  receiver cannot feed (classify/regress need one string input) are left out, logged."""
  check = out['check']
  assertion = tf.debugging.Assert(
      tf.equal(check[0], 0),
      [tf.strings.format(_CHECK_MESSAGE.replace('{code}', '{}'), check[1])])
  with tf.control_dependencies([assertion]):
    leaves = [tf.identity(t) for t in out['predictions']]
    extra = {k: tf.identity(t) for k, t in out['extra'].items()}
  predictions = jax.tree.unflatten(plan.treedef, leaves)
  served = host_graph.postprocess(predictions, transforms)
  flat = {path_name(p): t for p, t in jax.tree_util.tree_flatten_with_path(served)[0]}
  defs, excluded = {}, {}
  for key, (output, fields) in plan.signatures.items():
    tensors = {field: _prediction(field, name, flat) if source == 'prediction' else extra[name]
               for field, (source, name) in fields.items()}
    try:
      defs[key] = output.signature_def(receiver_tensors, tensors)
    except ValueError as e:
      excluded[key] = str(e)
  for key, reason in sorted(excluded.items()):
    logger.warning("export_saved_model: signature %r is not exported: %s", key, reason)
  if 'serving_default' not in defs:
    logger.warning('export_saved_model: export includes no default signature '
                   "('serving_default').")
  if not defs:
    raise ValueError(f'export_saved_model: no signature can be served from these receiver '
                     f'tensors ({sorted(receiver_tensors)}): {excluded}.')
  return defs


def _prediction(field: str, names: tuple[str, ...], flat: dict) -> tf.Tensor:
  """The served prediction for an output field that is the array of several predictions:
  the one named like the field ('class_ids', 'h/class_ids'), else a named (string) one, as
  a classification's `classes` (`all_classes`, not `all_class_ids`), else the first."""
  last = lambda name: name.rsplit('/', 1)[-1]
  same = [n for n in names if n == field] or [n for n in names if last(n) == last(field)]
  named = [n for n in names if flat[n].dtype == tf.string]
  return flat[(same or named or list(names))[0]]


def _copy_assets_extra(export_dir: str, assets_extra: Mapping[str, str] | None) -> None:
  """Copies `{destination: source}` into `export_dir/assets.extra/destination`."""
  for dest, source in (assets_extra or {}).items():
    target = os.path.join(export_dir, 'assets.extra', dest)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target)


def _rename_to_timestamp(written: str, export_dir_base: str) -> str:
  """Moves the finished export to `export_dir_base/<unix seconds>` (the next free second
  when that name is taken)."""
  stamp = int(time.time())
  for _ in range(100):
    target = os.path.join(export_dir_base, str(stamp))
    if not os.path.exists(target):
      try:
        os.rename(written, target)
        return target
      except OSError:  # taken meanwhile by another export
        pass
    stamp += 1
  raise RuntimeError(f'export_saved_model: no free timestamped directory in {export_dir_base}.')
