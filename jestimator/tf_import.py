"""TensorFlow, imported on first use and without the Keras it would load eagerly.

jestimator uses TensorFlow for tf.data, feature columns' string ops,
SavedModel export and (through TensorBoard's compat layer) event files, never
Keras, and an Estimator fed numpy batches needs none of it until it writes
TensorBoard scalars. So
`import jestimator` does not import TensorFlow (about 2.3 s of the 2.7 s it
took here); modules that use it write

  from jestimator.tf_import import tf

and `tf` imports TensorFlow when one of its attributes is first read. Code on
the numpy path that only asks "is this a TensorFlow object?" uses
`maybe_tf()` or `is_dataset()` instead, which never import: if TensorFlow is
not loaded, no object can be one of its types.

TensorFlow 2.16+ imports `keras.src.optimizers` while it is imported, only so
that Keras's optimizers are registered for SavedModel loading: 4 of 6.5 s
here. Importing jestimator installs an import hook, so that the first
`import tensorflow` in the process, ours or the user's (tensorflow_datasets',
a test's), runs with that one module blocked and unblocks it at once: a
program that uses Keras imports it as usual later, and Keras registers its
optimizers then. Nothing changes when TensorFlow or Keras was imported first.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import types

_EAGER_KERAS = 'keras.src.optimizers'


def import_tensorflow() -> types.ModuleType:
  """Returns `tensorflow`, importing it (without eager Keras) if it is not yet."""
  return importlib.import_module('tensorflow')


def maybe_tf() -> types.ModuleType | None:
  """Returns `tensorflow` if it is imported, else None; never imports it.

  None too while another thread is importing it (e.g. a background summary
  writer): its attributes are not all there yet, and until it is done no
  object can be a TensorFlow one.
  """
  module = sys.modules.get('tensorflow')
  if module is None or getattr(module.__spec__, '_initializing', False):
    return None
  return module


def tf_loaded() -> bool:
  return maybe_tf() is not None


def is_dataset(x) -> bool:
  """Whether `x` is a `tf.data.Dataset`; without TensorFlow imported, it cannot be one."""
  tf_module = maybe_tf()
  return tf_module is not None and isinstance(x, tf_module.data.Dataset)


class _LazyTensorFlow(types.ModuleType):
  """Stands for `tensorflow`; the first attribute read imports it."""

  def __getattr__(self, name: str):
    return getattr(import_tensorflow(), name)

  def __repr__(self) -> str:
    return f'<lazy tensorflow, {"imported" if tf_loaded() else "not imported yet"}>'


tf = _LazyTensorFlow('tensorflow')


class _WithoutEagerKeras(importlib.abc.Loader):
  """Runs TensorFlow's own loader with `keras.src.optimizers` blocked."""

  def __init__(self, loader: importlib.abc.Loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module: types.ModuleType) -> None:
    block = 'keras' not in sys.modules and _EAGER_KERAS not in sys.modules
    if block:
      sys.modules[_EAGER_KERAS] = None  # TF's `import_module` raises ImportError: skipped
    module.__loader__ = module.__spec__.loader = self._loader
    try:
      self._loader.exec_module(module)
    finally:
      if block and _EAGER_KERAS in sys.modules and sys.modules[_EAGER_KERAS] is None:
        del sys.modules[_EAGER_KERAS]


class _TensorFlowFinder(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` as the other finders would, and wraps its loader."""

  def find_spec(self, name, path, target=None):
    if name != 'tensorflow':
      return None
    for finder in sys.meta_path:
      if finder is self or not hasattr(finder, 'find_spec'):
        continue
      spec = finder.find_spec(name, path, target)
      if spec is not None:
        if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
          spec.loader = _WithoutEagerKeras(spec.loader)
        return spec
    return None


if not any(isinstance(finder, _TensorFlowFinder) for finder in sys.meta_path):
  sys.meta_path.insert(0, _TensorFlowFinder())
