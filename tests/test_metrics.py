"""Mean and Accuracy states: values, weights, merge, and the padding mask."""

import jax
import jax.numpy as jnp
import numpy as np

from jestimator.metrics import Accuracy, Mean
from jestimator.example_mask import mask_scope


def test_mean_is_weighted_and_merges():
  a = Mean.from_model_output(jnp.array([1.0, 2.0, 3.0]), weights=jnp.array([1.0, 0.0, 2.0]))
  b = Mean.from_model_output(jnp.array([[4.0], [6.0]]))
  np.testing.assert_allclose(a.compute(), 7.0 / 3.0, rtol=1e-6)
  np.testing.assert_allclose(a.merge(b).compute(), (7.0 + 10.0) / 5.0, rtol=1e-6)
  np.testing.assert_allclose(Mean.empty().compute(), 0.0)
  np.testing.assert_allclose(Mean.empty().merge(b).compute(), 5.0)


def test_accuracy_accepts_trailing_unit_axis_and_weights():
  labels = jnp.array([[0], [1], [2], [1]])
  preds = jnp.array([0, 1, 1, 1])
  np.testing.assert_allclose(Accuracy.from_model_output(labels, preds).compute(), 0.75)
  w = jnp.array([1.0, 1.0, 2.0, 0.0])
  np.testing.assert_allclose(Accuracy.from_model_output(labels, preds, w).compute(), 0.5)


def test_padding_mask_removes_padded_examples_under_jit():
  @jax.jit
  def f(values, mask):
    with mask_scope(mask):
      return Mean.from_model_output(values)

  m = f(jnp.array([1.0, 3.0, 100.0, 100.0]), jnp.array([1.0, 1.0, 0.0, 0.0]))
  np.testing.assert_allclose(m.compute(), 2.0)
  np.testing.assert_allclose(m.count, 2.0)
