"""jestimator.datasets: the demos' data as TFDS datasets, prepared and loaded offline."""

import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip('tensorflow_datasets')
datasets = pytest.importorskip('jestimator.datasets')


def test_import_jestimator_does_not_import_tensorflow_datasets():
  code = 'import sys, jestimator; print("tensorflow_datasets" in sys.modules)'
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split()[-1] == 'False'


def test_penguins_local_prepares_and_loads_offline(tmp_path):
  tfds.builder('penguins_local', data_dir=str(tmp_path)).download_and_prepare()
  splits = tfds.load('penguins_local', data_dir=str(tmp_path))
  assert {s: len(ds) for s, ds in splits.items()} == {'train': 266, 'test': 67}
  first = next(iter(tfds.as_numpy(splits['train'])))
  assert first == {'species': b'Adelie', 'island': b'Torgersen', 'sex': b'male',
                   'bill_length_mm': np.float32(39.1), 'bill_depth_mm': np.float32(18.7),
                   'flipper_length_mm': np.float32(181.0), 'body_mass_g': np.float32(3750.0)}
  assert all(isinstance(first[c], np.float32) for c in datasets.penguins.NUMERIC)


def test_penguins_local_splits_cover_the_complete_rows_once(tmp_path):
  builder = datasets.prepare('penguins_local', str(tmp_path))
  masses = [tfds.as_numpy(builder.as_dataset(split=s, batch_size=-1))['body_mass_g']
            for s in ('train', 'test')]
  rows = datasets.penguins.read_rows()
  assert sorted(np.concatenate(masses).tolist()) == sorted(float(r['body_mass_g']) for r in rows)


def test_digits_local_prepares_and_loads_offline(tmp_path):
  tfds.builder('digits_local', data_dir=str(tmp_path)).download_and_prepare()
  splits = tfds.load('digits_local', data_dir=str(tmp_path))
  assert {s: len(ds) for s, ds in splits.items()} == {'train': 1437, 'test': 360}
  first = next(iter(tfds.as_numpy(splits['train'])))
  assert first['image'].dtype == np.uint8 and first['image'].shape == (8, 8)
  assert first['label'] == 2
  np.testing.assert_array_equal(first['image'][0], [0, 0, 11, 16, 15, 3, 0, 0])
  image, label = next(iter(tfds.as_numpy(
      tfds.load('digits_local', split='test', data_dir=str(tmp_path), as_supervised=True))))
  assert (image.shape, int(label)) == ((8, 8), 7)


def test_prepare_reuses_prepared_data(tmp_path):
  builder = datasets.prepare('digits_local', str(tmp_path))
  assert builder.is_prepared()
  assert datasets.prepare('digits_local', str(tmp_path)).is_prepared()
