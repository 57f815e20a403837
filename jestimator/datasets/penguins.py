"""`penguins_local`: the Palmer penguins table as a TFDS dataset, built offline.

Reads `data/penguins.csv` shipped inside the `palmerpenguins` package; rows
with an NA in any column are dropped (333 of 344 remain). Features are the
columns: 'species', 'island', 'sex' as strings, the four measurements as
float32 scalars. Splits: 'train' (266) and 'test' (67), the rows of
`np.random.RandomState(0).permutation` before and after 80%, each in the
table's row order.
"""

from __future__ import annotations

import csv
import importlib.resources
import io

import numpy as np
import tensorflow_datasets as tfds

STRINGS = ['species', 'island', 'sex']
NUMERIC = ['bill_length_mm', 'bill_depth_mm', 'flipper_length_mm', 'body_mass_g']
SPLIT_SEED = 0
TRAIN_FRACTION = 0.8


def read_rows() -> list[dict[str, str]]:
  """The table's rows without an NA, as {column: text}."""
  raw = importlib.resources.files('palmerpenguins').joinpath('data/penguins.csv').read_text()
  return [r for r in csv.DictReader(io.StringIO(raw))
          if all(r[c] != 'NA' for c in STRINGS + NUMERIC)]


def split_indices(n: int) -> dict[str, list[int]]:
  """Row indices of each split: a seeded 80/20 cut, each part in row order."""
  order = np.random.RandomState(SPLIT_SEED).permutation(n)
  cut = int(TRAIN_FRACTION * n)
  return {'train': sorted(order[:cut].tolist()), 'test': sorted(order[cut:].tolist())}


class PenguinsLocal(tfds.core.GeneratorBasedBuilder):
  """Palmer penguins (complete rows), from the `palmerpenguins` package."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Complete rows; seeded 80/20 train/test split.'}
  name = 'penguins_local'

  def _info(self):
    features = {c: tfds.features.Text() for c in STRINGS}
    features.update({c: np.float32 for c in NUMERIC})
    return tfds.core.DatasetInfo(
        builder=self, description=__doc__, features=tfds.features.FeaturesDict(features),
        homepage='https://allisonhorst.github.io/palmerpenguins/',
        disable_shuffling=True)  # stored in row order, as the split lists them

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    rows = read_rows()
    return {split: self._generate_examples(rows, index)
            for split, index in split_indices(len(rows)).items()}

  def _generate_examples(self, rows, index):
    for i in index:
      row = rows[i]
      example = {c: row[c] for c in STRINGS}
      example.update({c: np.float32(row[c]) for c in NUMERIC})
      yield i, example
