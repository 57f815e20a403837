"""Deferred device checks: invalid labels, ids and user `je.check`s raise at the next sync.

A check costs no per-step host sync: the first failure (its step and values)
rides in a small device slot and is read where the loop syncs anyway (log
steps, saves, the end). Training raises before saving, so a state that saw a
failing step is never checkpointed; evaluate and predict raise after their
last batch, naming it.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jestimator as je
import jestimator.feature_column as fc
from jestimator.training import checks

BATCH, BAD_STEP, BAD_ROW = 16, 6, 5
CONFIG = dict(save_checkpoints_steps=4, log_step_count_steps=10, progress_bar=False)


def _labels(kind, rng):
  if kind == 'ids':
    return rng.randint(0, 3, BATCH).astype(np.int32)
  if kind == 'binary':
    return rng.randint(0, 2, (BATCH, 1)).astype(np.int32)
  if kind == 'unit':
    return rng.rand(BATCH, 1).astype(np.float32)
  return rng.randint(0, 2, (BATCH, 3)).astype(np.int32)  # multi-hot


def _batches(kind, n=20, bad=None, seed=0):
  """n batches; `bad` = {batch index: label value} puts that value at row BAD_ROW."""
  rng = np.random.RandomState(seed)
  out = []
  for i in range(n):
    x = rng.randn(BATCH, 4).astype(np.float32)
    y = _labels(kind, rng)
    if bad and i in bad:
      y[BAD_ROW] = bad[i]
    out.append(({'x': x}, y))
  return out


def _head_model_fn(head):
  def model_fn(features, labels, mode):
    logits = nn.Dense(head.logits_dimension)(features['x'])
    return head.create_estimator_spec(features, mode, logits, labels, optimizer=optax.sgd(0.1))
  return model_fn


HEADS = [  # head, label kind, invalid label, message
    (je.heads.MultiClassHead(3, name='species'), 'ids', 3,
     r"MultiClassHead 'species': invalid label 3; labels must be <= n_classes - 1 "
     r'\(n_classes = 3\)'),
    (je.heads.MultiClassHead(3), 'ids', -1,
     r'MultiClassHead: invalid label -1; labels must be >= 0'),
    (je.heads.BinaryClassHead(), 'binary', 2,
     r'BinaryClassHead: invalid label 2.0; labels must be <= n_classes - 1 \(n_classes = 2\)'),
    (je.heads.LogisticRegressionHead(), 'unit', 1.5,
     r'LogisticRegressionHead: invalid label 1.5; labels must be in range \[0, 1\]'),
    (je.heads.MultiLabelHead(3), 'hot', 2,
     r'MultiLabelHead: invalid label 2; labels must be 0 or 1 \(multi-hot\)'),
]
HEAD_IDS = ['multi_class_high', 'multi_class_negative', 'binary', 'logistic', 'multi_label']


@pytest.mark.parametrize('head,kind,bad,message', HEADS, ids=HEAD_IDS)
def test_train_raises_at_the_next_sync_and_keeps_only_earlier_checkpoints(
    model_dir, head, kind, bad, message):
  est = je.Estimator(_head_model_fn(head), model_dir, je.RunConfig(**CONFIG))
  with pytest.raises(je.InvalidInputError, match=message) as error:
    est.train(lambda: _batches(kind, bad={BAD_STEP: bad}), max_steps=20)
  # step 6 fails; the save at step 8 reads the slot first and raises instead
  assert f'At global step {BAD_STEP}:' in str(error.value)
  assert 'last checkpoint (step 4) is kept' in str(error.value)
  assert est._checkpoints().all_steps() == [4]


@pytest.mark.parametrize('head,kind,bad,message', HEADS, ids=HEAD_IDS)
def test_evaluate_raises_after_its_last_batch_naming_the_bad_batch(
    model_dir, head, kind, bad, message):
  pulled = []

  def input_fn():
    for batch in _batches(kind, n=4, bad={2: bad}):
      pulled.append(1)
      yield batch

  est = je.Estimator(_head_model_fn(head), model_dir, je.RunConfig(progress_bar=False))
  with pytest.raises(je.InvalidInputError, match='In evaluate, batch 2 of the input: ' + message):
    est.evaluate(input_fn)
  assert len(pulled) == 4  # the whole input ran before the error


@pytest.mark.parametrize('head,kind', [(h[0], h[1]) for h in HEADS], ids=HEAD_IDS)
def test_valid_labels_pass_every_check(model_dir, head, kind):
  est = je.Estimator(_head_model_fn(head), model_dir, je.RunConfig(**CONFIG))
  est.train(lambda: _batches(kind), max_steps=12)
  assert est._checkpoints().all_steps()[-1] == 12
  assert np.isfinite(est.evaluate(lambda: _batches(kind, n=3))['loss'])


@pytest.mark.parametrize('extra', [
    {}, {'steps_per_loop': 4}, {'runner': 'shard_map'},
    {'runner': 'shard_map', 'steps_per_loop': 4}, {'gradient_accumulation_steps': 2}],
    ids=['jit', 'K4', 'shard_map', 'shard_map_K4', 'accumulate2'])
def test_first_failure_wins_under_every_runner(model_dir, extra):
  """Steps 6 and 7 fail in one K=4 scan (steps 4-7); step 6's label is reported."""
  head = je.heads.MultiClassHead(3, name='species')
  config = je.RunConfig(save_checkpoints_steps=100, log_step_count_steps=8,
                        progress_bar=False, **extra)
  est = je.Estimator(_head_model_fn(head), model_dir, config)
  with pytest.raises(je.InvalidInputError, match=r'At global step 6: .*invalid label 3;'):
    est.train(lambda: _batches('ids', bad={6: 3, 7: -1}), max_steps=20)
  assert est._checkpoints().all_steps() == []
  compiled = [fn._cache_size() for fn in est._runner._train.values()]
  assert max(compiled) == 1  # one executable per shape, checks or not (K=4: no single step ran)


def _identity_model_fn(column):
  def model_fn(features, labels, mode):
    logits = nn.Dense(3)(fc.DenseFeatures([fc.indicator_column(column)])(features))
    head = je.heads.MultiClassHead(3)
    return head.create_estimator_spec(features, mode, logits, labels, optimizer=optax.sgd(0.1))
  return model_fn


def _id_batches(n, bad_batch=None):
  rng = np.random.RandomState(0)
  out = []
  for i in range(n):
    ids = rng.randint(0, 4, (BATCH, 1)).astype(np.int64)
    if i == bad_batch:
      ids[3, 0], ids[9, 0] = 4, 5
    out.append(({'c': ids}, rng.randint(0, 3, BATCH).astype(np.int32)))
  return out


IDENTITY_MESSAGE = (r"feature column 'c' \(categorical_column_with_identity without "
                    r'default_value\): id 4 is not in \[0, 4\)')


def test_identity_column_ids_out_of_range_raise_in_train_evaluate_and_predict(tmp_path):
  column = fc.categorical_column_with_identity('c', num_buckets=4)
  est = je.Estimator(_identity_model_fn(column), str(tmp_path / 'a'),
                     je.RunConfig(**CONFIG), feature_columns=[column])
  with pytest.raises(je.InvalidInputError, match=r'At global step 6: ' + IDENTITY_MESSAGE):
    est.train(lambda: _id_batches(20, bad_batch=6), max_steps=20)
  assert est._checkpoints().all_steps() == [4]
  with pytest.raises(je.InvalidInputError, match='In evaluate, batch 1 of the input: ' +
                     IDENTITY_MESSAGE):
    est.evaluate(lambda: _id_batches(3, bad_batch=1))
  with pytest.raises(je.InvalidInputError, match='In predict, batch 2 of the input: ' +
                     IDENTITY_MESSAGE):
    list(est.predict(lambda: [f for f, _ in _id_batches(3, bad_batch=2)]))


def test_identity_column_with_default_value_maps_out_of_range_ids_silently(model_dir):
  column = fc.categorical_column_with_identity('c', num_buckets=4, default_value=0)
  est = je.Estimator(_identity_model_fn(column), model_dir, je.RunConfig(**CONFIG),
                     feature_columns=[column])
  est.train(lambda: _id_batches(10, bad_batch=6), max_steps=10)
  assert est._checkpoints().all_steps()[-1] == 10


def _user_check_model_fn(features, labels, mode):
  x = features['x']
  je.check(jnp.abs(x) < 10.0, 'feature x must be in (-10, 10), got {x} at {index}', x=x)
  logits = nn.Dense(3)(x)
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions={'logits': logits})
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  return je.EstimatorSpec(mode, loss=loss, predictions={'logits': logits},
                          optimizer=optax.sgd(0.1))


def _x_batches(n, bad_batch=None):
  batches = _batches('ids', n=n)
  if bad_batch is not None:
    batches[bad_batch][0]['x'][BAD_ROW, 2] = 12.5
  return batches


def test_user_check_in_a_model_fn(tmp_path):
  est = je.Estimator(_user_check_model_fn, str(tmp_path / 'a'), je.RunConfig(**CONFIG))
  with pytest.raises(je.InvalidInputError,
                     match=r'At global step 6: feature x must be in \(-10, 10\), got 12.5 at '
                           r'\(5, 2\) The last checkpoint \(step 4\) is kept'):
    est.train(lambda: _x_batches(20, bad_batch=6), max_steps=20)
  with pytest.raises(je.InvalidInputError, match=r'In evaluate, batch 1 .* got 12.5 at \(5, 2\)'):
    est.evaluate(lambda: _x_batches(3, bad_batch=1))
  predictions = []
  with pytest.raises(je.InvalidInputError, match=r'In predict, batch 2 .* got 12.5 at \(5, 2\)'):
    for p in est.predict(lambda: [f for f, _ in _x_batches(3, bad_batch=2)]):
      predictions.append(p)
  assert len(predictions) == 3 * BATCH  # predict raises after yielding every prediction


def test_check_outside_a_step_raises_at_once_when_concrete():
  with pytest.raises(je.InvalidInputError, match=r'id 7 > 5 at \(1,\)'):
    je.check(np.array([1, 7, 9]) <= 5, 'id {id} > {limit} at {index}', id=np.array([1, 7, 9]),
             limit=5)
  je.check(np.array([True, True]), 'never shown')


def test_checks_add_no_host_sync(monkeypatch, tmp_path):
  """The slot is read exactly where the loop syncs anyway: log steps and saves."""
  reads = []
  real_read = checks.read
  monkeypatch.setattr(checks, 'read', lambda slot: reads.append(1) or real_read(slot))

  def plain_model_fn(features, labels, mode):
    logits = nn.Dense(3)(features['x'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return je.EstimatorSpec(mode, loss=loss, predictions=logits, optimizer=optax.sgd(0.1))

  config = je.RunConfig(save_checkpoints_steps=10, log_step_count_steps=5, progress_bar=False)
  counts = {}
  for name, model_fn in [('plain', plain_model_fn),
                         ('head', _head_model_fn(je.heads.MultiClassHead(3))),
                         ('user', _user_check_model_fn)]:
    reads.clear()
    je.Estimator(model_fn, str(tmp_path / name), config).train(
        lambda: _batches('ids'), max_steps=20)
    counts[name] = len(reads)
  # log syncs at steps 5, 10, 15, 20 and saves at 10, 20: one read each
  assert counts == {'plain': 6, 'head': 6, 'user': 6}


def test_evaluate_and_predict_read_the_slot_once(monkeypatch, model_dir):
  reads = []
  real_read = checks.read
  monkeypatch.setattr(checks, 'read', lambda slot: reads.append(1) or real_read(slot))
  est = je.Estimator(_user_check_model_fn, model_dir, je.RunConfig(progress_bar=False))
  est.evaluate(lambda: _x_batches(5))
  assert len(list(est.predict(lambda: [f for f, _ in _x_batches(5)]))) == 5 * BATCH
  assert len(reads) == 2
