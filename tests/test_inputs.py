"""numpy_input_fn / pandas_input_fn and input_fn argument matching."""

import numpy as np
import pandas as pd
import pytest

import jestimator as je
from jestimator.inputs.input_fn import call_input_fn
from jestimator.inputs.padding import pad_batch


def _batches(input_fn, **kw):
  return [tuple(np.asarray(t) for t in b) if isinstance(b, tuple) else b
          for b in input_fn(**kw).as_numpy_iterator()]


def test_numpy_input_fn_batches_in_order_without_shuffle():
  x = {'a': np.arange(10, dtype=np.float32)}
  y = np.arange(10) * 10
  batches = list(je.inputs.numpy_input_fn(x, y, batch_size=4, shuffle=False)().as_numpy_iterator())
  assert [len(f['a']) for f, _ in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([l for _, l in batches]), y)


def test_numpy_input_fn_requires_explicit_shuffle_and_equal_lengths():
  with pytest.raises(ValueError, match='shuffle must be given explicitly'):
    je.inputs.numpy_input_fn({'a': np.zeros(3)})
  with pytest.raises(ValueError, match='x has 3 examples but y has 2'):
    je.inputs.numpy_input_fn({'a': np.zeros(3)}, np.zeros(2), shuffle=False)


def test_numpy_input_fn_shuffle_is_a_permutation_per_epoch_and_seeded():
  x = {'a': np.arange(20)}
  fn = je.inputs.numpy_input_fn(x, batch_size=20, num_epochs=2, shuffle=True, seed=1)
  epochs = [b['a'] for b in fn().as_numpy_iterator()]
  assert len(epochs) == 2
  for e in epochs:
    assert sorted(e) == list(range(20))
  assert list(epochs[0]) != list(range(20))
  again = [b['a'] for b in fn().as_numpy_iterator()]
  np.testing.assert_array_equal(epochs[0], again[0])


def test_pandas_input_fn_uses_columns_as_features():
  df = pd.DataFrame({'a': np.arange(6, dtype=np.float32), 'b': np.arange(6) * 2})
  y = pd.Series(np.arange(6) % 2)
  (f, l), *_ = je.inputs.pandas_input_fn(df, y, batch_size=6, shuffle=False)().as_numpy_iterator()
  assert sorted(f) == ['a', 'b']
  np.testing.assert_array_equal(f['b'], np.arange(6) * 2)
  np.testing.assert_array_equal(l, np.arange(6) % 2)
  with pytest.raises(TypeError, match='DataFrame'):
    je.inputs.pandas_input_fn(np.zeros(3), shuffle=False)


def test_input_fn_gets_only_the_arguments_it_names():
  seen = {}

  def input_fn(mode, params):
    seen.update(mode=mode, params=params)
    return []

  call_input_fn(input_fn, mode='eval', params={'p': 1}, config=None, input_context=None)
  assert seen == {'mode': 'eval', 'params': {'p': 1}}
  with pytest.raises(ValueError, match="required arguments \\['batch'\\]"):
    call_input_fn(lambda batch: None, mode='eval', params=None, config=None, input_context=None)


def test_pad_batch_repeats_last_example_and_masks_it():
  (f,), mask = pad_batch((np.array([[1.0], [2.0], [3.0]]),), 5)
  np.testing.assert_array_equal(f[:, 0], [1, 2, 3, 3, 3])
  np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0])
