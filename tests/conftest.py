"""Test session setup: 8 virtual CPU devices, so meshes are exercised everywhere.

XLA_FLAGS must be set before jax initialises its backends. Tests that want one
device pass `one_device_config()`.
"""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from jestimator import tf_import  # noqa: E402,F401  (TensorFlow without eager Keras)
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.set_visible_devices([], 'GPU')


@pytest.fixture
def model_dir(tmp_path):
  return str(tmp_path / 'model')


def one_device_mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
