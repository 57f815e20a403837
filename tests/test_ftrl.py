"""`jestimator.optimizers.ftrl` against tf.keras.optimizers.legacy.Ftrl (TF 2.15).

tests/fixtures/optimizers/ftrl.json (tools/fixtures/make_ftrl_fixtures.py):
six dense steps per configuration -- default, L1/L2, L1 large enough to zero
weights, L2 shrinkage, beta, other learning-rate powers -- with the variable
and both slots after every step.
"""

import json
import pathlib

import jax
import numpy as np
import optax
import pytest

from jestimator.optimizers import ftrl, get_optimizer

FIXTURE = json.loads((pathlib.Path(__file__).parent / 'fixtures' / 'optimizers' /
                      'ftrl.json').read_text())
CASES = {c['name']: c for c in FIXTURE['cases']}


@pytest.mark.parametrize('name', sorted(CASES))
def test_ftrl_steps_equal_tf(name):
  case = CASES[name]
  opt = ftrl(**case['args'])
  params = {'w': np.asarray(case['init'], np.float32)}
  state = opt.init(params)
  step = jax.jit(lambda g, s, p: opt.update(g, s, p))
  for grad, want in zip(case['grads'], case['steps']):
    updates, state = step({'w': np.asarray(grad, np.float32)}, state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(state.accumulator['w'], want['accumulator'], rtol=1e-6)
    np.testing.assert_allclose(state.linear['w'], want['linear'], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(params['w'], want['var'], rtol=2e-5, atol=1e-6)


def test_ftrl_needs_params():
  opt = ftrl(0.1)
  params = {'w': np.zeros(3, np.float32)}
  with pytest.raises(ValueError, match='needs params'):
    opt.update(params, opt.init(params))


def test_ftrl_takes_a_schedule():
  constant = ftrl(0.2)
  scheduled = ftrl(optax.constant_schedule(0.2))
  params = {'w': np.ones(3, np.float32)}
  grads = {'w': np.array([0.5, -1.0, 2.0], np.float32)}
  a, _ = constant.update(grads, constant.init(params), params)
  b, _ = scheduled.update(grads, scheduled.init(params), params)
  np.testing.assert_allclose(a['w'], b['w'])


@pytest.mark.parametrize('name', ['Adagrad', 'Adam', 'Ftrl', 'RMSProp', 'SGD'])
def test_optimizer_names(name):
  opt = get_optimizer(name, 0.1)
  params = {'w': np.ones(3, np.float32)}
  updates, _ = opt.update({'w': np.ones(3, np.float32)}, opt.init(params), params)
  assert np.all(np.asarray(updates['w']) < 0)


def test_unknown_optimizer_name():
  with pytest.raises(ValueError, match="Unsupported optimizer name: 'Adadelta'"):
    get_optimizer('Adadelta', 0.1)
