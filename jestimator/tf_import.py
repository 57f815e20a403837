"""Imports TensorFlow without the Keras it would load eagerly: 4 of its 6.5 s here.

TensorFlow 2.16+ imports `keras.src.optimizers` while it is imported, only so
that Keras's optimizers are registered for SavedModel loading. jestimator uses
TensorFlow for tf.data, feature columns' string ops, tf.summary and SavedModel
export, never Keras, so it imports TensorFlow with that one module blocked and
unblocks it at once: a program that uses Keras imports it as usual later, and
Keras registers its optimizers then. Nothing changes when TensorFlow or Keras
was imported first. Every process pays this at start (each test worker,
notebook kernel, evaluator job), hence the trouble.
"""

from __future__ import annotations

import sys

_EAGER_KERAS = 'keras.src.optimizers'


def import_tensorflow() -> None:
  if 'tensorflow' in sys.modules or 'keras' in sys.modules:
    return
  sys.modules[_EAGER_KERAS] = None  # makes TF's `import_module` raise ImportError: skipped
  try:
    import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  finally:
    if _EAGER_KERAS in sys.modules and sys.modules[_EAGER_KERAS] is None:
      del sys.modules[_EAGER_KERAS]


import_tensorflow()
