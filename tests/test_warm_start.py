"""Warm start: a new model_dir starts from another model's checkpoint, at step 0 only.

Model A trains 3 steps with Adam. Each warm-started model B then trains one
step with `optax.sgd(0.)`, which saves its state unchanged: its warm-started
variables must equal A's bit for bit, and the others must equal a fresh
model's (C: B's architecture, no warm start, the same seed).
"""

import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jestimator as je
from jestimator.checkpoint import CheckpointStore
from jestimator.training.train_state import TrainState
from jestimator.warm_start import WarmStartSettings, warm_start, warm_start_settings
from models import make_data, params_of

X, Y = make_data(64)


def input_fn():
  """Two batches of 32, three times (divisible by 8 and by 2 devices)."""
  return [({'x': X[i:i + 32]}, Y[i:i + 32]) for i in range(0, 64, 32)] * 3


def model_fn(features, labels, mode, params):
  """Dense layers named `hidden_<i>` (or `params['names']`), then `logits`."""
  h = features['x']
  for i, width in enumerate(params['widths']):
    h = nn.relu(nn.Dense(width, name=params.get('names', {}).get(i, f'hidden_{i}'))(h))
  logits = nn.Dense(3, name='logits')(h)
  if mode == je.ModeKeys.PREDICT:
    return je.EstimatorSpec(mode, predictions={'logits': logits})
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  optimizer = optax.sgd(0.) if params.get('frozen') else optax.adam(1e-2)
  return je.EstimatorSpec(mode, loss=loss, optimizer=optimizer)


def train(model_dir, widths=(16,), steps=1, config=None, **kw):
  """An Estimator of `model_fn` trained `steps` steps (frozen, lr 0, unless `adam`)."""
  params = {'widths': widths, 'frozen': not kw.pop('adam', False), **kw.pop('params', {})}
  est = je.Estimator(model_fn, str(model_dir), config, params, **kw)
  return est.train(input_fn, steps=steps)


@pytest.fixture(scope='module')
def model_a(tmp_path_factory):
  """A: one hidden layer, 3 steps of Adam, checkpoints at steps 2 and 3."""
  config = je.RunConfig(save_checkpoints_steps=2)
  return train(tmp_path_factory.mktemp('a') / 'model', steps=3, adam=True, config=config)


@pytest.fixture(scope='module')
def fresh_b(tmp_path_factory):
  """C: B's architecture (an extra hidden layer) as initialised, never warm-started."""
  return params_of(train(tmp_path_factory.mktemp('c') / 'model', widths=(16, 16)))


def assert_from(est, source, names):
  values = params_of(est)
  for name in names:
    np.testing.assert_array_equal(values[name], source[name], err_msg=name)


A_NAMES = ['params/hidden_0/bias', 'params/hidden_0/kernel', 'params/logits/bias',
           'params/logits/kernel']


def test_default_copies_every_variable_the_source_has(model_a, fresh_b, tmp_path, caplog):
  with caplog.at_level(logging.INFO, logger='jestimator'):
    b = train(tmp_path / 'b', widths=(16, 16), warm_start_from=model_a.model_dir)
  a = params_of(model_a)
  assert_from(b, a, A_NAMES)
  assert_from(b, fresh_b, ['params/hidden_1/bias', 'params/hidden_1/kernel'])
  assert not np.array_equal(a['params/hidden_0/kernel'], fresh_b['params/hidden_0/kernel'])
  assert b.get_variable_value('global_step') == 1  # the step is B's, from 0
  log = caplog.text
  assert f'Warm-started 4 of 6 variables from {model_a.model_dir}/3' in log
  assert 'Not warm-started (their fresh initialisation stays): params/hidden_1/bias, ' \
         'params/hidden_1/kernel' in log
  assert 'The optimizer state starts fresh' in log


def test_regex_selects_the_first_layer_only(model_a, fresh_b, tmp_path):
  settings = WarmStartSettings(model_a.model_dir, 'params/hidden_0/')
  b = train(tmp_path / 'b', widths=(16, 16), warm_start_from=settings)
  assert_from(b, params_of(model_a), ['params/hidden_0/bias', 'params/hidden_0/kernel'])
  assert_from(b, fresh_b, ['params/hidden_1/bias', 'params/hidden_1/kernel',
                           'params/logits/bias', 'params/logits/kernel'])


def test_list_of_names_copies_exactly_those(model_a, fresh_b, tmp_path):
  settings = WarmStartSettings(model_a.model_dir, ['params/logits/kernel'])
  b = train(tmp_path / 'b', widths=(16, 16), warm_start_from=settings)
  assert_from(b, params_of(model_a), ['params/logits/kernel'])
  assert_from(b, fresh_b, ['params/hidden_0/kernel', 'params/logits/bias'])


def test_renamed_variables_come_from_their_previous_names(model_a, tmp_path):
  renames = {'params/encoder/kernel': 'params/hidden_0/kernel',
             'params/encoder/bias': 'params/hidden_0/bias'}
  settings = WarmStartSettings(model_a.model_dir, var_name_to_prev_var_name=renames)
  b = train(tmp_path / 'b', params={'names': {0: 'encoder'}}, warm_start_from=settings)
  a, values = params_of(model_a), params_of(b)
  for new, old in renames.items():
    np.testing.assert_array_equal(values[new], a[old], err_msg=new)
  assert_from(b, a, ['params/logits/bias', 'params/logits/kernel'])


def test_a_checkpoint_directory_warm_starts_from_that_step(model_a, tmp_path):
  b = train(tmp_path / 'b', warm_start_from=os.path.join(model_a.model_dir, '2'))
  at_2 = CheckpointStore(model_a.model_dir, None, False).variables_by_name(2)
  assert_from(b, at_2, A_NAMES)
  assert not np.array_equal(at_2['params/logits/kernel'],
                            model_a.get_variable_value('params/logits/kernel'))


def test_shape_mismatch_names_the_variable(model_a, tmp_path):
  est = je.Estimator(model_fn, str(tmp_path / 'b'), None, {'widths': (32,), 'frozen': True},
                     warm_start_from=model_a.model_dir)
  with pytest.raises(ValueError, match=r'params/hidden_0/kernel: this model has '
                     r'float32\[8, 32\], the checkpoint float32\[8, 16\]') as error:
    est.train(input_fn, steps=1)
  assert 'params/hidden_0/bias: this model has float32[32], the checkpoint float32[16]' in str(
      error.value)
  assert est.latest_checkpoint() is None  # nothing trained, nothing saved


SOURCE_NAMES = ('its variables: params/hidden_0/bias, params/hidden_0/kernel, params/logits/bias, '
                'params/logits/kernel.')


@pytest.mark.parametrize('settings, message', [
    (dict(vars_to_warm_start=['params/hidden_1/kernel']),
     "'params/hidden_1/kernel' not in the checkpoint {a}/3; " + SOURCE_NAMES),
    (dict(var_name_to_prev_var_name={'params/hidden_1/bias': 'params/hidden_9/bias'}),
     "'params/hidden_9/bias' not in the checkpoint {a}/3; " + SOURCE_NAMES),
    (dict(vars_to_warm_start=['params/Dense_0/kernel']),
     "vars_to_warm_start: 'params/Dense_0/kernel' is no variable of this model"),
    (dict(vars_to_warm_start='params/logits/',
          var_name_to_prev_var_name={'params/hidden_0/bias': 'params/hidden_0/bias'}),
     'var_name_to_prev_var_name renames params/hidden_0/bias, which vars_to_warm_start='
     "'params/logits/' does not select"),
])
def test_a_named_variable_that_cannot_be_copied_is_an_error(model_a, tmp_path, settings,
                                                              message):
  est = je.Estimator(model_fn, str(tmp_path / 'b'), None, {'widths': (16, 16), 'frozen': True},
                     warm_start_from=WarmStartSettings(model_a.model_dir, **settings))
  with pytest.raises(ValueError) as error:
    est.train(input_fn, steps=1)
  assert message.format(a=model_a.model_dir) in str(error.value)


def test_a_model_dir_with_checkpoints_resumes_instead(model_a, tmp_path):
  own = params_of(train(tmp_path / 'b', steps=2))
  b = train(tmp_path / 'b', warm_start_from=model_a.model_dir)
  assert b.get_variable_value('global_step') == 3
  assert_from(b, own, A_NAMES)
  assert not np.array_equal(own['params/logits/kernel'],
                            model_a.get_variable_value('params/logits/kernel'))


@pytest.mark.parametrize('path, message', [
    ('missing', 'does not exist'),
    ('empty', 'holds no finished checkpoint'),
])
def test_a_source_without_checkpoint_fails_at_construction(tmp_path, path, message):
  os.makedirs(tmp_path / 'empty')
  with pytest.raises(ValueError, match=f'{tmp_path / path}.*{message}'):
    je.Estimator(model_fn, str(tmp_path / 'b'), warm_start_from=str(tmp_path / path))


@pytest.mark.parametrize('settings, error', [
    (dict(vars_to_warm_start='params/(('), 'is not a regex'),
    (dict(vars_to_warm_start=['global_step']), 'global_step'),
    (dict(vars_to_warm_start=3), 'a regex or a list of variable names'),
    (dict(var_name_to_prev_var_name={'params/a': 1}), 'must map names to names'),
])
def test_bad_settings_are_rejected_when_built(model_a, settings, error):
  with pytest.raises((TypeError, ValueError), match=error):
    warm_start_settings(WarmStartSettings(model_a.model_dir, **settings))


def test_the_source_may_come_from_another_mesh(tmp_path):
  two = je.RunConfig(mesh=Mesh(np.array(jax.devices()[:2]), ('data',)), partition_rules='fsdp')
  a = train(tmp_path / 'a', steps=2, adam=True, config=two)
  eight = je.RunConfig(partition_rules=[('hidden_0/kernel', P(None, 'data'))])
  b = train(tmp_path / 'b', config=eight, warm_start_from=a.model_dir)
  assert b.mesh.devices.size == 8
  assert_from(b, params_of(a), A_NAMES)


def test_canned_dnn_classifier_warm_starts_from_another(tmp_path):
  columns = [je.feature_column.numeric_column('x', shape=(8,))]
  binary = (Y == 0).astype(np.int32).reshape(-1, 1)
  a = je.canned.DNNClassifier([8], columns, str(tmp_path / 'a'))
  a.train(lambda: [({'x': X[i:i + 32]}, binary[i:i + 32]) for i in range(0, 64, 32)], steps=2)
  b = je.canned.DNNClassifier([8], columns, str(tmp_path / 'b'), optimizer=optax.sgd(0.),
                       warm_start_from=a.model_dir)
  b.train(lambda: [({'x': X[:32]}, binary[:32])], steps=1)
  source = params_of(a)
  assert params_of(b).keys() == source.keys()
  assert_from(b, source, [n for n in source if n != 'global_step'])


def _mu(model_dir, step):
  """Adam's first moments as saved at `step`, by parameter path."""
  with ocp.StandardCheckpointer() as reader:
    saved = reader.restore(os.path.join(model_dir, str(step), 'train'))
  return saved['opt_state'][0]['mu'], saved['opt_state'][0]['count']


def test_optimizer_state_is_carried_only_when_asked(model_a):
  mesh = Mesh(np.array(jax.devices()), ('data',))
  split = NamedSharding(mesh, P(None, 'data'))
  whole = NamedSharding(mesh, P())
  params = {'hidden_0': {'kernel': jax.device_put(jnp.zeros((8, 16)), split),
                         'bias': jax.device_put(jnp.zeros(16), whole)},
            'logits': {'kernel': jax.device_put(jnp.zeros((16, 3)), whole),
                       'bias': jax.device_put(jnp.zeros(3), whole)}}
  fresh = TrainState(step=jnp.int32(0), params=params, model_state={},
                     opt_state=optax.adam(1e-2).init(params), rng=jax.random.PRNGKey(0))
  first_layer = WarmStartSettings(model_a.model_dir, 'params/hidden_0/',
                                  warm_start_optimizer=True)
  state = warm_start(fresh, warm_start_settings(first_layer))
  mu, count = _mu(model_a.model_dir, 3)
  np.testing.assert_array_equal(state.opt_state[0].mu['hidden_0']['kernel'],
                                mu['hidden_0']['kernel'])
  assert int(state.opt_state[0].count) == int(count) == 3
  np.testing.assert_array_equal(state.opt_state[0].mu['logits']['kernel'], np.zeros((16, 3)))
  np.testing.assert_array_equal(state.params['hidden_0']['kernel'],
                                model_a.get_variable_value('params/hidden_0/kernel'))
  assert state.params['hidden_0']['kernel'].sharding == split  # the target's, not the source's
  assert int(state.step) == 0
  state = warm_start(fresh, warm_start_settings(model_a.model_dir))
  assert int(state.opt_state[0].count) == 0
  np.testing.assert_array_equal(state.opt_state[0].mu['hidden_0']['kernel'], np.zeros((8, 16)))
