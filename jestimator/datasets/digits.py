"""`digits_local`: scikit-learn's 1,797 bundled 8x8 digits as a TFDS dataset, offline.

Features: 'image' uint8 [8, 8] with the original values 0..16, 'label'
ClassLabel(10). Splits: 'train' (1,437) and 'test' (360), the first and last
20% of `np.random.RandomState(0).permutation(1797)`, in that permuted order.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

SPLIT_SEED = 0
TRAIN_FRACTION = 0.8


def split_indices(n: int) -> dict[str, list[int]]:
  """Indices into sklearn's arrays of each split, in the order they are stored."""
  order = np.random.RandomState(SPLIT_SEED).permutation(n)
  cut = int(TRAIN_FRACTION * n)
  return {'train': order[:cut].tolist(), 'test': order[cut:].tolist()}


class DigitsLocal(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's `load_digits`, split 80/20."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Seeded 80/20 train/test split.'}
  name = 'digits_local'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(8, 8), dtype=np.uint8),
            'label': tfds.features.ClassLabel(num_classes=10)}),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/modules/generated/'
                 'sklearn.datasets.load_digits.html',
        disable_shuffling=True)  # stored in the split's permuted order

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
    data = load_digits()
    images, labels = data.images.astype(np.uint8), data.target
    return {split: self._generate_examples(images, labels, index)
            for split, index in split_indices(len(labels)).items()}

  def _generate_examples(self, images, labels, index):
    for position, i in enumerate(index):  # keys in order: disable_shuffling keeps it
      yield position, {'image': images[i], 'label': int(labels[i])}
