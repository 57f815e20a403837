"""MeanSquaredError, RootMeanSquaredError, MeanAbsoluteError (tf.keras examples)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jestimator.metrics import MeanAbsoluteError, MeanSquaredError, RootMeanSquaredError
from jestimator.example_mask import mask_scope

LABELS = jnp.array([[0.0, 1.0], [0.0, 0.0]])
PREDICTIONS = jnp.array([[1.0, 1.0], [0.0, 0.0]])


@pytest.mark.parametrize('cls,unweighted,weighted', [
    (MeanSquaredError, 0.25, 0.5),
    (RootMeanSquaredError, 0.5, np.sqrt(0.5)),
    (MeanAbsoluteError, 0.25, 0.5),
])
def test_keras_examples(cls, unweighted, weighted):
  np.testing.assert_allclose(cls.from_model_output(LABELS, PREDICTIONS).compute(), unweighted,
                             rtol=1e-6)
  w = jnp.array([1.0, 0.0])
  np.testing.assert_allclose(cls.from_model_output(LABELS, PREDICTIONS, w).compute(), weighted,
                             rtol=1e-6)


def test_rmse_merges_the_squares_not_the_roots():
  a = RootMeanSquaredError.from_model_output(jnp.array([0.0]), jnp.array([3.0]))
  b = RootMeanSquaredError.from_model_output(jnp.array([0.0, 0.0, 0.0]), jnp.array([1.0, 1.0, 1.0]))
  np.testing.assert_allclose(a.merge(b).compute(), np.sqrt(12.0 / 4.0), rtol=1e-6)


def test_padding_mask_and_shape_check():
  @jax.jit
  def f(y, p, mask):
    with mask_scope(mask):
      return MeanSquaredError.from_model_output(y, p)

  m = f(jnp.array([1.0, 2.0, 0.0]), jnp.array([2.0, 4.0, 100.0]), jnp.array([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(m.compute(), 2.5)
  with pytest.raises(ValueError, match='does not match'):
    MeanSquaredError.from_model_output(jnp.zeros((3, 1)), jnp.zeros((3, 2)))
