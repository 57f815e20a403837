"""Precision, Recall, BinaryAccuracy, AccuracyBaseline and AUC states.

Reference values are the examples of the tf.keras.metrics documentation;
tf.estimator parity through the heads is in test_heads_parity.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jestimator.metrics import AUC, AccuracyBaseline, BinaryAccuracy, Precision, Recall
from jestimator.example_mask import mask_scope


@pytest.mark.parametrize('cls', [Precision, Recall])
def test_precision_and_recall_match_keras_examples(cls):
  labels, predictions = jnp.array([0, 1, 1, 1]), jnp.array([1, 0, 1, 1])
  np.testing.assert_allclose(cls.from_model_output(labels, predictions).compute(), 2 / 3,
                             rtol=1e-6)
  weighted = cls.from_model_output(labels, predictions, weights=jnp.array([0.0, 0.0, 1.0, 0.0]))
  np.testing.assert_allclose(weighted.compute(), 1.0)


def test_precision_and_recall_count_strictly_above_the_threshold():
  labels = jnp.array([[1], [0], [1], [1]])
  probabilities = jnp.array([[0.7], [0.7], [0.3], [0.5]])
  p = Precision.from_model_output(labels, probabilities, threshold=0.5)
  r = Recall.from_model_output(labels, probabilities, threshold=0.5)
  np.testing.assert_allclose(p.compute(), 0.5)
  np.testing.assert_allclose(r.compute(), 1 / 3, rtol=1e-6)
  np.testing.assert_allclose(Recall.from_model_output(labels, probabilities, threshold=0.2)
                             .compute(), 1.0)


def test_soft_labels_are_positive_when_non_zero():
  r = Recall.from_model_output(jnp.array([0.0, 0.3, 0.8]), jnp.array([1, 1, 0]))
  np.testing.assert_allclose(r.compute(), 0.5)


def test_precision_is_zero_when_nothing_is_predicted_positive():
  p = Precision.from_model_output(jnp.array([1, 1]), jnp.array([0, 0]))
  assert float(p.compute()) == 0.0
  assert float(Precision.empty().compute()) == 0.0


def test_binary_accuracy_matches_keras_example():
  labels = jnp.array([[1], [1], [0], [0]])
  predictions = jnp.array([[0.98], [1.0], [0.0], [0.6]])
  np.testing.assert_allclose(BinaryAccuracy.from_model_output(labels, predictions).compute(), 0.75)
  weighted = BinaryAccuracy.from_model_output(labels, predictions, jnp.array([1.0, 0.0, 0.0, 1.0]))
  np.testing.assert_allclose(weighted.compute(), 0.5)


def test_accuracy_baseline_is_the_majority_rate_and_merges_exactly():
  a = AccuracyBaseline.from_model_output(jnp.array([0, 1, 0]))
  b = AccuracyBaseline.from_model_output(jnp.array([1, 1]))
  np.testing.assert_allclose(a.compute(), 2 / 3, rtol=1e-6)
  np.testing.assert_allclose(a.merge(b).compute(), 0.6, rtol=1e-6)


def test_auc_matches_keras_example():
  auc = AUC.from_model_output(jnp.array([0, 0, 1, 1]), jnp.array([0.0, 0.5, 0.3, 0.9]))
  np.testing.assert_allclose(auc.compute(), 0.75, rtol=1e-6)


def test_auc_is_close_to_exact_roc_auc_and_one_for_perfect_ranking():
  rng = np.random.RandomState(0)
  labels = rng.randint(0, 2, size=400)
  scores = np.clip(0.3 * labels + rng.rand(400) * 0.7, 0, 1).astype(np.float32)
  auc = AUC.from_model_output(labels, scores).compute()
  np.testing.assert_allclose(auc, roc_auc_score(labels, scores), atol=5e-3)
  perfect = AUC.from_model_output(jnp.array([0, 0, 1, 1]), jnp.array([0.1, 0.2, 0.8, 0.9]))
  np.testing.assert_allclose(perfect.compute(), 1.0)
  np.testing.assert_allclose(AUC.from_model_output(jnp.array([0, 0, 1, 1]),
                                                   jnp.array([0.1, 0.2, 0.8, 0.9]),
                                                   curve='PR').compute(), 1.0)


@pytest.mark.parametrize('curve', ['ROC', 'PR'])
def test_auc_merged_over_batches_equals_one_batch(curve):
  rng = np.random.RandomState(1)
  labels = rng.randint(0, 2, size=(30, 2))
  scores = rng.rand(30, 2).astype(np.float32)
  weights = rng.rand(30, 1).astype(np.float32)
  whole = AUC.from_model_output(labels, scores, weights, curve=curve)
  parts = [AUC.from_model_output(labels[s], scores[s], weights[s], curve=curve)
           for s in (slice(0, 7), slice(7, 20), slice(20, 30))]
  merged = AUC.empty(curve=curve)
  for part in parts:
    merged = merged.merge(part)
  np.testing.assert_allclose(merged.compute(), whole.compute(), rtol=1e-5)
  assert merged.true_positives.shape == (200,)


def test_auc_state_is_a_pytree_with_a_static_curve():
  state = AUC.empty(num_thresholds=7, curve='PR')
  leaves, treedef = jax.tree.flatten(state)
  assert len(leaves) == 4 and all(x.shape == (7,) for x in leaves)
  assert jax.tree.unflatten(treedef, leaves).curve == 'PR'
  with pytest.raises(ValueError, match='cannot merge'):
    state.merge(AUC.empty(num_thresholds=7))
  with pytest.raises(ValueError, match='curve'):
    AUC.empty(curve='DET')


@pytest.mark.parametrize('make', [
    lambda y, p: Precision.from_model_output(y, p),
    lambda y, p: Recall.from_model_output(y, p),
    lambda y, p: BinaryAccuracy.from_model_output(y, p),
    lambda y, p: AccuracyBaseline.from_model_output(y),
    lambda y, p: AUC.from_model_output(y, p),
    lambda y, p: AUC.from_model_output(y, p, curve='PR'),
], ids=['precision', 'recall', 'binary_accuracy', 'accuracy_baseline', 'auc', 'auc_pr'])
def test_padding_mask_drops_padded_examples_under_jit(make):
  labels = jnp.array([[1], [0], [1], [0], [0], [0]])
  probabilities = jnp.array([[0.9], [0.2], [0.4], [0.6], [0.95], [0.95]])
  real = make(labels[:4], probabilities[:4]).compute()

  @jax.jit
  def padded(y, p, mask):
    with mask_scope(mask):
      return make(y, p)

  mask = jnp.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
  np.testing.assert_allclose(padded(labels, probabilities, mask).compute(), real, rtol=1e-6)


def test_mismatched_shapes_are_rejected():
  with pytest.raises(ValueError, match='does not match'):
    Precision.from_model_output(jnp.zeros((4, 2)), jnp.zeros((4, 3)))
  with pytest.raises(ValueError, match='does not match'):
    AUC.from_model_output(jnp.zeros((4,)), jnp.zeros((5,)))
