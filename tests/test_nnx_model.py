"""Flax NNX modules in a model_fn (`je.nnx_model`): same numbers as a hand-written `nnx.jit`
loop; batch stats by mode; exact resume; partition rules; dropout keyed by seed and step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, PartitionSpec as P

import jestimator as je
from jestimator.training.transform import ModelFnModule
from models import make_data, params_of

STEPS, BATCH, LR = 20, 32, 1e-2


class MLP(nnx.Module):
  """8 -> 16 -> 3, with optional BatchNorm after the hidden layer and Dropout before the last."""

  def __init__(self, *, rngs, dropout=0.0, batch_norm=False):
    self.linear1 = nnx.Linear(8, 16, rngs=rngs)
    self.bn = nnx.BatchNorm(16, momentum=0.9, rngs=rngs) if batch_norm else None
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.linear2 = nnx.Linear(16, 3, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.linear1(x))
    if self.bn is not None:
      h = self.bn(h)
    return self.linear2(self.dropout(h))


def _loss(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def model_fn(features, labels, mode, params):
  model = je.nnx_model(lambda rngs: MLP(rngs=rngs, **params))
  logits = model(features['x'])
  predictions = {'logits': logits}
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions=predictions)
  return je.EstimatorSpec(mode, loss=_loss(logits, labels), predictions=predictions,
                          optimizer=optax.adam(LR))


def batches():
  """The same 20 batches, in order, for jestimator and the hand-written loop."""
  x, y = make_data(STEPS * BATCH)
  return [({'x': x[i:i + BATCH]}, y[i:i + BATCH]) for i in range(0, len(x), BATCH)]


class CaptureInit(je.hooks.Hook):
  """Copies the train state's variables to the host before the first step."""

  def after_restore(self, ctx):
    self.variables = jax.device_get(ctx.state.variables)


def _names(variables):
  """`{'params': {'NnxModel_0': {...}}}` -> `{'params/NnxModel_0/linear1/kernel': array}`."""
  flat = jax.tree_util.tree_flatten_with_path(variables)[0]
  return {'/'.join(k.key for k in path): np.asarray(v) for path, v in flat}


def _assert_close(expected, got, tol=1e-5):
  got = {k: v for k, v in got.items() if k != 'global_step'}
  assert sorted(expected) == sorted(got)
  for name in expected:
    np.testing.assert_allclose(got[name], expected[name], rtol=tol, atol=tol, err_msg=name)


def _hand_model(variables, **params):
  """The NNX module with jestimator's variables loaded (`{'params': {'NnxModel_0': ...}}`)."""
  model = MLP(rngs=nnx.Rngs(0), **params)
  nnx.update(model, *(nnx.State(tree['NnxModel_0']) for tree in variables.values()))
  return model


def train_by_hand(init_variables, **params):
  """The tutorial loop: `nnx.Optimizer` and an `nnx.jit` step; returns flat variable names."""
  model = _hand_model(init_variables, **params)
  optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

  @nnx.jit
  def step(model, optimizer, x, y):
    grads = nnx.grad(lambda m: _loss(m(x), y))(model)
    optimizer.update(model, grads)

  model.train()
  for features, labels in batches():
    step(model, optimizer, features['x'], labels)
  state = {'params': nnx.state(model, nnx.Param), 'batch_stats': nnx.state(model, nnx.BatchStat)}
  return _names({c: {'NnxModel_0': s.to_pure_dict()} for c, s in state.items() if s})


@pytest.fixture(scope='module', params=[False, True], ids=['mlp', 'batch_norm'])
def reference(request, tmp_path_factory):
  """jestimator's initial variables and the hand-written loop's variables after 20 steps."""
  params = {'batch_norm': request.param}
  capture = CaptureInit()
  est = je.Estimator(model_fn, str(tmp_path_factory.mktemp('ref')), je.RunConfig(seed=0),
                     params)
  est.train(batches, max_steps=STEPS, hooks=[capture])
  return params, capture.variables, train_by_hand(capture.variables, **params), est


def test_same_parameters_as_a_hand_written_nnx_jit_loop(reference):
  _, _, by_hand, est = reference
  _assert_close(by_hand, params_of(est))


@pytest.fixture(scope='module')
def dropout_batch_norm(tmp_path_factory):
  """Trained 5 steps with dropout 0.5 and batch norm: its initial and trained variables."""
  params = {'dropout': 0.5, 'batch_norm': True}
  capture = CaptureInit()
  est = je.Estimator(model_fn, str(tmp_path_factory.mktemp('bn')), je.RunConfig(seed=0), params)
  est.train(batches, max_steps=5, hooks=[capture])
  return params, capture.variables, est


@pytest.mark.parametrize('mode', [je.ModeKeys.EVAL, je.ModeKeys.PREDICT])
def test_batch_stats_update_in_train_and_are_used_as_is_otherwise(dropout_batch_norm, mode):
  params, init, est = dropout_batch_norm
  trained = {k: v for k, v in params_of(est).items() if k != 'global_step'}
  for name in ('mean', 'var'):
    name = f'batch_stats/NnxModel_0/bn/{name}'
    assert not np.allclose(trained[name], _names(init)[name]), name  # TRAIN updated them
  variables = {'params': {}, 'batch_stats': {}}
  for name, value in trained.items():
    collection, *path = name.split('/')
    node = variables[collection]
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value
  x = make_data(16, seed=1)[0]
  labels = None if mode == je.ModeKeys.PREDICT else np.zeros(16, np.int32)
  spec, updates = ModelFnModule(model_fn, hparams=params).apply(
      variables, {'x': x}, labels, mode, rngs={'dropout': jax.random.key(1)},
      mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, updates['batch_stats'], variables['batch_stats'])
  hand = _hand_model(variables, **params)
  hand.eval()  # running averages, not this batch's statistics; no dropout
  np.testing.assert_allclose(spec.predictions['logits'], hand(x), rtol=1e-5, atol=1e-5)


def test_partition_rules_and_a_mesh_apply(reference, tmp_path):
  params, _, by_hand, _ = reference
  rules = [('linear1/kernel', P(None, 'model')), ('linear2/kernel', P('model', None))]
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'model'))
  est = je.Estimator(model_fn, str(tmp_path), je.RunConfig(seed=0, mesh=mesh,
                                                           partition_rules=rules), params)
  captured = {}

  class Capture(je.hooks.Hook):
    def end(self, ctx):
      captured['kernels'] = [ctx.state.params['NnxModel_0'][k]['kernel'].sharding.spec
                             for k in ('linear1', 'linear2')]

  est.train(batches, max_steps=STEPS, hooks=[Capture()])
  assert captured['kernels'] == [P(None, 'model'), P('model', None)]
  _assert_close(by_hand, params_of(est))


def test_train_5_then_5_equals_train_10(tmp_path):
  params = {'dropout': 0.3, 'batch_norm': True}
  config = je.RunConfig(seed=3)
  whole = je.Estimator(model_fn, str(tmp_path / 'whole'), config, params)
  whole.train(batches, max_steps=10)
  je.Estimator(model_fn, str(tmp_path / 'split'), config, params).train(batches, steps=5)
  split = je.Estimator(model_fn, str(tmp_path / 'split'), config, params)  # from disk
  split.train(batches, steps=5)
  a, b = params_of(whole), params_of(split)
  assert sorted(a) == sorted(b) and a['global_step'] == 10
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


class MaskProbe(nnx.Module):
  """loss = mean(dropout(ones) * w): w's gradient is the (scaled) dropout mask."""

  def __init__(self, *, rngs):
    self.w = nnx.Param(jnp.ones(64))
    self.dropout = nnx.Dropout(0.5, rngs=rngs)

  def __call__(self, x):
    return (self.dropout(x) * self.w[...]).mean()


def probe_model_fn(features, labels, mode):  # labels unused
  loss = je.nnx_model(lambda rngs: MaskProbe(rngs=rngs))(features['x'])
  return je.EstimatorSpec(mode, loss=loss, optimizer=optax.sgd(64.0))


def probe_batches():
  return [({'x': np.ones((8, 64), np.float32)}, np.zeros(8, np.int32))] * 2


def _masks(model_dir, seed):
  """The dropout masks of the first two steps (2 x mean over the batch), read from w's updates."""
  est = je.Estimator(probe_model_fn, model_dir, je.RunConfig(seed=seed))
  ws = [np.ones(64)]
  for _ in range(2):
    est.train(probe_batches, steps=1)
    ws.append(est.get_variable_value('params/NnxModel_0/w'))
  return [a - b for a, b in zip(ws, ws[1:])]


def test_dropout_differs_by_step_and_repeats_for_a_seed(tmp_path):
  first, second = _masks(str(tmp_path / 'a'), seed=0)
  assert first.std() > 0.1 and second.std() > 0.1  # dropout is on in TRAIN
  assert not np.allclose(first, second)
  again = _masks(str(tmp_path / 'b'), seed=0)
  np.testing.assert_array_equal(first, again[0])
  np.testing.assert_array_equal(second, again[1])
  assert not np.allclose(first, _masks(str(tmp_path / 'c'), seed=1)[0])


def test_outside_a_model_fn_needs_a_mode():
  with pytest.raises(ValueError, match='inside a model_fn'):
    je.nnx_model(lambda rngs: MLP(rngs=rngs))
  with pytest.raises(ValueError, match='mode must be one of'):
    je.nnx_model(lambda rngs: MLP(rngs=rngs), mode='training')


def test_a_stream_missing_from_rng_streams_is_named(tmp_path):
  est = je.Estimator(probe_model_fn, str(tmp_path), je.RunConfig(rng_streams=('noise',)))
  with pytest.raises(ValueError, match="No RngStream named 'dropout'.*rng_streams"):
    est.train(probe_batches, steps=1)


class Stack(nnx.Module):
  """Layers in an `nnx.List`: NNX paths with integer keys (`layers/0/kernel`)."""

  def __init__(self, *, rngs):
    self.layers = nnx.List([nnx.Linear(8, 16, rngs=rngs), nnx.Linear(16, 3, rngs=rngs)])

  def logits(self, x):
    return self.layers[1](nnx.relu(self.layers[0](x)))


def stack_model_fn(features, labels, mode):
  logits = je.nnx_model(lambda rngs: Stack(rngs=rngs))(features['x'], nnx_method='logits')
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions={'logits': logits})
  return je.EstimatorSpec(mode, loss=_loss(logits, labels), optimizer=optax.adam(LR))


def test_a_list_of_layers_checkpoints_predicts_and_exports(tmp_path):
  je.Estimator(stack_model_fn, str(tmp_path / 'model')).train(batches, max_steps=3)
  est = je.Estimator(stack_model_fn, str(tmp_path / 'model'))  # variables from disk
  names = [f'params/NnxModel_0/layers/{i}/{v}' for i in '01' for v in ('bias', 'kernel')]
  assert sorted(est.get_variable_names()) == ['global_step', *names]  # strings, not ints
  x = make_data(8)[0]
  predicted = np.stack([p['logits'] for p in est.predict(lambda: [{'x': x}])])
  exported = je.export.load_jax(est.export_jax(str(tmp_path / 'export')))
  np.testing.assert_allclose(exported({'x': x})['logits'], predicted, rtol=1e-5, atol=1e-5)
