"""The demos' data as TensorFlow Datasets, built offline from files in installed packages.

Importing this package registers the builders (and imports tensorflow_datasets,
which `import jestimator` does not):

  penguins_local: the Palmer penguins table of the `palmerpenguins` package.
  digits_local:   scikit-learn's bundled 8x8 digits.

  import jestimator.datasets
  builder = jestimator.datasets.prepare('penguins_local')   # offline, once
  ds = tfds.load('penguins_local', data_dir=builder.data_dir_root)
"""

from __future__ import annotations

import fcntl
import os

import tensorflow_datasets as tfds

from jestimator.datasets.digits import DigitsLocal
from jestimator.datasets.penguins import PenguinsLocal

DEFAULT_DATA_DIR = os.path.join('~', '.cache', 'jestimator', 'tensorflow_datasets')


def default_data_dir() -> str:
  """$JESTIMATOR_DATA_DIR, else ~/.cache/jestimator/tensorflow_datasets."""
  return os.path.expanduser(os.environ.get('JESTIMATOR_DATA_DIR', DEFAULT_DATA_DIR))


def prepare(name: str, data_dir: str | None = None) -> tfds.core.DatasetBuilder:
  """The builder of `name` with its data prepared in data_dir (built now if missing).

  Several processes may ask at once (test workers, notebook kernels): an exclusive
  `flock` on `<data_dir>/<name>.lock` lets one build while the others wait, then
  they find it prepared.
  """
  data_dir = data_dir or default_data_dir()
  builder = tfds.builder(name, data_dir=data_dir)
  if builder.is_prepared():
    return builder
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f'{name}.lock'), 'w', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare()
  return builder


__all__ = ['DEFAULT_DATA_DIR', 'DigitsLocal', 'PenguinsLocal', 'default_data_dir', 'prepare']
