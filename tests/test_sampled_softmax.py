"""SampledSoftmaxHead and sampled_softmax_loss: TF parity, samplers, chunked eval, Estimator."""

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest
import tensorflow as tf
from jax.sharding import Mesh, PartitionSpec as P

import jestimator as je
from jestimator.heads import candidate_sampling as cs
from jestimator.heads.sampled_softmax import top_k_logits
from models import params_of

N_CLASSES, HIDDEN = 50, 8


def _problem(num_classes=20, dim=6, batch=8, num_true=1, seed=0):
  rng = np.random.RandomState(seed)
  return (rng.randn(num_classes, dim).astype(np.float32), rng.randn(num_classes).astype(np.float32),
          rng.randint(0, num_classes, (batch, num_true)).astype(np.int64),
          rng.randn(batch, dim).astype(np.float32))


@pytest.mark.parametrize('remove_accidental_hits', [True, False])
@pytest.mark.parametrize('num_true', [1, 2])
def test_loss_equals_tensorflow_for_the_same_sampled_values(num_true, remove_accidental_hits):
  weights, biases, labels, inputs = _problem(num_true=num_true)
  sampled_values = tf.random.log_uniform_candidate_sampler(labels, num_true, 10, True, 20, seed=3)
  assert (labels[:, :, None] == sampled_values[0].numpy()).any()  # accidental hits to remove
  expected = tf.nn.sampled_softmax_loss(weights, biases, labels, inputs, 10, 20, num_true,
                                        sampled_values=sampled_values,
                                        remove_accidental_hits=remove_accidental_hits)
  got = je.heads.sampled_softmax_loss(weights, biases, labels.astype(np.int32), inputs, 10, 20,
                                      num_true, [np.asarray(v) for v in sampled_values],
                                      remove_accidental_hits)
  np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_with_accidental_hits_give_a_finite_loss():
  """-FLT_MAX is -inf in bfloat16: the logits are formed in float32."""
  weights, biases, labels, inputs = _problem()
  sampled = tf.random.log_uniform_candidate_sampler(labels, 1, 10, True, 20, seed=3)
  sampled = [np.asarray(v) for v in sampled]
  assert (labels[:, :, None] == sampled[0]).any()
  f32 = je.heads.sampled_softmax_loss(weights, biases, labels.astype(np.int32), inputs, 10, 20,
                                      1, sampled)
  bf16 = je.heads.sampled_softmax_loss(weights, biases, labels.astype(np.int32),
                                       inputs.astype(jax.numpy.bfloat16), 10, 20, 1, sampled)
  assert np.isfinite(bf16).all()
  np.testing.assert_allclose(bf16, f32, rtol=2e-2, atol=2e-2)


def test_gradients_equal_tensorflow():
  weights, biases, labels, inputs = _problem(num_true=2)
  sampled_values = tf.random.log_uniform_candidate_sampler(labels, 2, 10, True, 20, seed=5)
  tensors = [tf.constant(a) for a in (weights, biases, inputs)]
  with tf.GradientTape() as tape:
    tape.watch(tensors)
    loss = tf.reduce_sum(tf.nn.sampled_softmax_loss(
        tensors[0], tensors[1], labels, tensors[2], 10, 20, 2, sampled_values=sampled_values))
  expected = tape.gradient(loss, tensors)
  values = [np.asarray(v) for v in sampled_values]
  got = jax.grad(lambda w, b, x: je.heads.sampled_softmax_loss(
      w, b, labels.astype(np.int32), x, 10, 20, 2, values).sum(), argnums=(0, 1, 2))(
          weights, biases, inputs)
  for g, e in zip(got, expected):
    np.testing.assert_allclose(g, tf.convert_to_tensor(e).numpy(), rtol=1e-4, atol=1e-5)


def _num_tries(probability, expected, num_sampled):
  """The num_tries TF used, read back from its expected counts."""
  p, e = np.float64(probability), np.float64(expected)
  if np.allclose(e, p * num_sampled, rtol=1e-6):
    return num_sampled
  informative = e < 0.999  # a count saturated at 1.0 says nothing about num_tries
  return int(np.round(np.median(np.log1p(-e[informative]) / np.log1p(-p[informative]))))


@pytest.mark.parametrize('sampler,range_max,num_sampled', [
    ('log_uniform', 1000, 40), ('log_uniform', 30, 20), ('uniform', 1000, 40),
    ('uniform', 30, 20)])
def test_expected_counts_equal_tensorflow_for_the_same_candidates(sampler, range_max,
                                                                  num_sampled):
  labels = np.array([[0], [3], [17], [29]], np.int64)
  tf_sampler = getattr(tf.random, f'{sampler}_candidate_sampler')
  sampled, true_count, sampled_count = (t.numpy() for t in tf_sampler(
      labels, 1, num_sampled, True, range_max, seed=7))
  probability = getattr(cs, f'{sampler}_probability')
  tries = _num_tries(probability(sampled, range_max), sampled_count, num_sampled)
  for ids, expected in ((sampled, sampled_count), (labels, true_count)):
    got = cs.expected_count(probability(ids.astype(np.int32), range_max), num_sampled, tries)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize('sampler', ['log_uniform', 'uniform'])
def test_samplers_draw_unique_candidates_with_tensorflows_num_tries(sampler):
  """Unique, in range, counts consistent with their num_tries, and num_tries distributed
  as TF's (mean over 200 draws each)."""
  range_max, num_sampled, labels = 30, 20, np.array([[0], [3]], np.int64)
  probability = getattr(cs, f'{sampler}_probability')
  ours = jax.jit(jax.vmap(lambda key: getattr(cs, f'{sampler}_candidate_sampler')(
      labels.astype(np.int32), 1, num_sampled, True, range_max, key=key)))(
          jax.random.split(jax.random.PRNGKey(0), 200))
  ours_tries, tf_tries = [], []
  for i in range(200):
    ids, counts = np.asarray(ours.sampled_candidates[i]), ours.sampled_expected_count[i]
    assert len(set(ids)) == num_sampled and ids.min() >= 0 and ids.max() < range_max
    ours_tries.append(_num_tries(probability(ids, range_max), counts, num_sampled))
    np.testing.assert_allclose(counts, cs.expected_count(probability(ids, range_max),
                                                         num_sampled, ours_tries[-1]), rtol=1e-5)
    tf_ids, _, tf_counts = getattr(tf.random, f'{sampler}_candidate_sampler')(
        labels, 1, num_sampled, True, range_max, seed=i + 1)
    tf_tries.append(_num_tries(probability(tf_ids.numpy(), range_max), tf_counts.numpy(),
                               num_sampled))
  assert np.mean(ours_tries) == pytest.approx(np.mean(tf_tries), rel=0.1)


def test_learned_unigram_samples_by_counts_and_counts_the_labels():
  counts = np.ones(20, np.float32)
  counts[5] = 1000.0
  labels = np.array([[5], [7], [7]], np.int32)
  sample, new_counts = cs.learned_unigram_candidate_sampler(labels, 1, 4, True, 20,
                                                            key=jax.random.PRNGKey(0),
                                                            counts=counts)
  assert 5 in np.asarray(sample.sampled_candidates)
  expected = counts.copy()
  expected[5] += 1
  expected[7] += 2
  np.testing.assert_array_equal(new_counts, expected)
  # with counts all 1 it is the uniform sampler (TF's first learned_unigram call)
  _, true_count, sampled_count = tf.random.learned_unigram_candidate_sampler(
      labels.astype(np.int64), 1, 4, True, 20, seed=1)
  tries = _num_tries(np.full(4, 1 / 20), sampled_count.numpy(), 4)
  got = cs.expected_count(cs.unigram_probability(labels, np.ones(20, np.float32)), 4, tries)
  np.testing.assert_allclose(got, true_count.numpy(), rtol=1e-5)


@pytest.mark.parametrize('chunk_size', [50, 10, 7, 64])
def test_chunked_top_k_equals_the_full_softmax(chunk_size):
  rng = np.random.RandomState(0)
  weights, biases = rng.randn(N_CLASSES, HIDDEN), rng.randn(N_CLASSES)
  inputs = rng.randn(6, HIDDEN)
  weights, biases, inputs = (a.astype(np.float32) for a in (weights, biases, inputs))
  logits = inputs @ weights.T + biases
  values, ids, lse = jax.jit(top_k_logits, static_argnums=(3, 4))(inputs, weights, biases, 5,
                                                                   chunk_size)
  np.testing.assert_array_equal(ids, np.argsort(-logits, axis=1, kind='stable')[:, :5])
  np.testing.assert_allclose(values, np.sort(logits, axis=1)[:, ::-1][:, :5], rtol=1e-5)
  np.testing.assert_allclose(lse, np.log(np.exp(logits).sum(1)), rtol=1e-5)


# -- the head in an Estimator --------------------------------------------------------------


def _data(n=256, seed=0):
  """Labels from a fixed random linear map of the features: learnable, 50 classes."""
  rng = np.random.RandomState(seed)
  x = rng.randn(n, 16).astype(np.float32)
  y = np.argmax(x @ np.random.RandomState(1).randn(16, N_CLASSES), axis=1).astype(np.int32)
  return x, y


def _model_fn(features, labels, mode, params):
  h = nn.Dense(HIDDEN, name='hidden')(features['x'])
  head = je.heads.SampledSoftmaxHead(N_CLASSES, num_sampled=10, sampler=params['sampler'],
                                     eval_chunk_size=params.get('chunk', 16),
                                     recall_at=(1, 5, 10))
  return head.create_estimator_spec(features, mode, h, labels, optimizer=optax.adam(0.05))


def _full_softmax(est, x, y):
  """numpy: the full softmax on the trained parameters -> (loss, recall@k, top-k)."""
  p = params_of(est)
  h = x @ p['params/hidden/kernel'] + p['params/hidden/bias']
  logits = h @ p['params/sampled_softmax/embedding'].T + p['params/sampled_softmax/bias']
  lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
  loss = np.mean(lse - logits[np.arange(len(y)), y])
  rank = np.argsort(-logits, axis=1, kind='stable')
  recall = {k: np.mean(np.any(rank[:, :k] == y[:, None], axis=1)) for k in (1, 5, 10)}
  return loss, recall, rank, np.exp(logits - lse[:, None])


@pytest.mark.parametrize('sampler', ['log_uniform', 'uniform', 'learned_unigram'])
def test_trains_and_evaluates_as_the_full_softmax(model_dir, sampler):
  x, y = _data()
  est = je.Estimator(_model_fn, model_dir, je.RunConfig(progress_bar=False, seed=0),
                     {'sampler': sampler})
  train = je.inputs.numpy_input_fn({'x': x}, y, batch_size=32, num_epochs=None, shuffle=True)
  eval_fn = je.inputs.numpy_input_fn({'x': x[:100]}, y[:100], batch_size=32, shuffle=False)
  before = est.evaluate(eval_fn)
  est.train(train, steps=150)
  after = est.evaluate(eval_fn)  # 100 examples: the last batch is padded
  assert sorted(after) == ['accuracy', 'average_loss', 'global_step', 'loss', 'recall_at_1',
                           'recall_at_10', 'recall_at_5']
  assert after['average_loss'] < 0.7 * before['average_loss']
  loss, recall, rank, probabilities = _full_softmax(est, x[:100], y[:100])
  np.testing.assert_allclose(after['average_loss'], loss, rtol=1e-4)
  for k in (1, 5, 10):
    assert after[f'recall_at_{k}'] == pytest.approx(recall[k], abs=1e-6)
  assert after['accuracy'] == pytest.approx(recall[1], abs=1e-6)
  predictions = list(est.predict(je.inputs.numpy_input_fn({'x': x[:40]}, shuffle=False)))
  ids = np.stack([p['top_k_class_ids'] for p in predictions])
  np.testing.assert_array_equal(ids, rank[:40, :10])
  np.testing.assert_array_equal(np.stack([p['class_ids'] for p in predictions]), rank[:40, :1])
  np.testing.assert_allclose(np.stack([p['top_k_probabilities'] for p in predictions]),
                             np.take_along_axis(probabilities[:40], rank[:40, :10], 1),
                             rtol=1e-4, atol=1e-6)
  if sampler == 'learned_unigram':  # counts of the 150 x 32 labels seen, from 1
    counts = est.get_variable_value('candidate_sampler/sampled_softmax/counts')
    assert counts.sum() == N_CLASSES + 150 * 32


def test_chunk_size_does_not_change_evaluation(tmp_path):
  x, y = _data()
  train = je.inputs.numpy_input_fn({'x': x}, y, batch_size=32, num_epochs=None, shuffle=True)
  eval_fn = je.inputs.numpy_input_fn({'x': x[:100]}, y[:100], batch_size=32, shuffle=False)
  est = je.Estimator(_model_fn, str(tmp_path / 'a'), je.RunConfig(progress_bar=False, seed=0),
                     {'sampler': 'log_uniform', 'chunk': N_CLASSES})
  est.train(train, steps=20)
  whole = est.evaluate(eval_fn)
  for chunk in (7, 25):
    chunked = je.Estimator(_model_fn, est.model_dir, je.RunConfig(progress_bar=False, seed=0),
                           {'sampler': 'log_uniform', 'chunk': chunk}).evaluate(eval_fn)
    assert sorted(chunked) == sorted(whole)
    for key in whole:
      np.testing.assert_allclose(chunked[key], whole[key], rtol=1e-5, err_msg=key)


def test_class_embedding_sharded_on_a_model_axis_gives_the_same_numbers(tmp_path):
  x, y = _data()
  train = je.inputs.numpy_input_fn({'x': x}, y, batch_size=32, num_epochs=None, shuffle=True)
  eval_fn = je.inputs.numpy_input_fn({'x': x[:100]}, y[:100], batch_size=32, shuffle=False)
  one = je.Estimator(_model_fn, str(tmp_path / 'one'),
                     je.RunConfig(progress_bar=False, seed=0,
                                  mesh=Mesh(np.array(jax.devices()[:1]), ('data',))),
                     {'sampler': 'log_uniform'})
  one.train(train, steps=20)
  rules = [('sampled_softmax/embedding', P('model', None)), ('sampled_softmax/bias', P('model'))]
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'model'))
  sharded = je.Estimator(_model_fn, str(tmp_path / 'tp'),
                         je.RunConfig(progress_bar=False, seed=0, mesh=mesh,
                                      partition_rules=rules), {'sampler': 'log_uniform'})
  captured = {}

  class Capture(je.hooks.Hook):
    def end(self, ctx):
      captured['embedding'] = ctx.state.params['sampled_softmax']['embedding']

  sharded.train(train, steps=20, hooks=[Capture()])
  assert captured['embedding'].sharding.spec == P('model', None)
  a, b = params_of(one), params_of(sharded)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)
  expected, got = one.evaluate(eval_fn), sharded.evaluate(eval_fn)
  for key in expected:
    np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, err_msg=key)


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match='sampler must be one of'):
    je.heads.SampledSoftmaxHead(10, 5, sampler='zipf')
  with pytest.raises(ValueError, match='num_sampled must be in'):
    je.heads.SampledSoftmaxHead(10, 11)
  with pytest.raises(ValueError, match='pass key='):
    je.heads.sampled_softmax_loss(*_problem()[:2], np.zeros((8, 1), np.int32),
                                  _problem()[3], 5, 20)
