"""Partition rules (tensor parallel, FSDP): same numbers as data parallel; restore across meshes."""

import shutil

import jax
import numpy as np
import pytest
import tensorflow as tf
from jax.sharding import Mesh, PartitionSpec as P

import jestimator as je
from conftest import one_device_mesh
from models import make_data, mlp_model_fn, params_of

PARAMS = {'hidden': 16, 'batch_norm': True}
TENSOR_PARALLEL = [('Dense_0/kernel', P(None, 'model')), ('Dense_1/kernel', P('model', None))]


def _input():
  x, y = make_data(512)
  ds = tf.data.Dataset.from_tensor_slices(({'x': x}, y)).shuffle(256, seed=0)
  return ds.repeat().batch(32, drop_remainder=True)


def _mesh(shape):
  return Mesh(np.array(jax.devices()).reshape(shape), ('data', 'model')[:len(shape)])


def _assert_close(a, b):
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.fixture(scope='module')
def data_parallel_one_device(tmp_path_factory):
  est = je.Estimator(mlp_model_fn, str(tmp_path_factory.mktemp('dp')),
                     je.RunConfig(mesh=one_device_mesh()), PARAMS)
  est.train(_input, max_steps=10)
  return params_of(est)


@pytest.mark.parametrize('mesh_shape,rules', [((8,), 'fsdp'), ((4, 2), TENSOR_PARALLEL)])
def test_partitioned_training_equals_one_device(tmp_path, data_parallel_one_device, mesh_shape,
                                                rules):
  config = je.RunConfig(mesh=_mesh(mesh_shape), partition_rules=rules)
  est = je.Estimator(mlp_model_fn, str(tmp_path), config, PARAMS)
  captured = {}

  class Capture(je.hooks.Hook):
    def end(self, ctx):
      captured['state'] = ctx.state

  est.train(_input, max_steps=10, hooks=[Capture()])
  _assert_close(data_parallel_one_device, params_of(est))
  state = captured['state']
  kernel = state.params['Dense_0']['kernel']
  mu = state.opt_state[0].mu['Dense_0']['kernel']
  # kernel (8, 16): FSDP splits its larger dimension over 'data'; the rule puts 'model' there
  expected = P(None, 'data') if rules == 'fsdp' else P(None, 'model')
  assert kernel.sharding.spec == expected and mu.sharding.spec == expected
  assert len(kernel.addressable_shards[0].data.reshape(-1)) < kernel.size


def test_checkpoint_from_a_4x2_mesh_restores_on_8_and_on_1_device(tmp_path):
  model_dir = str(tmp_path)
  tp = je.RunConfig(mesh=_mesh((4, 2)), partition_rules=TENSOR_PARALLEL)
  je.Estimator(mlp_model_fn, model_dir, tp, PARAMS).train(_input, max_steps=6)
  reference = je.Estimator(mlp_model_fn, str(tmp_path / 'ref'), tp, PARAMS)
  reference.train(_input, max_steps=12)
  x, y = make_data(64)
  eval_fn = lambda: [({'x': x}, y)]
  expected = reference.evaluate(eval_fn)
  for config in (je.RunConfig(mesh=_mesh((8,))), je.RunConfig(mesh=one_device_mesh())):
    est = je.Estimator(mlp_model_fn, str(tmp_path / f'copy{len(config.mesh.devices.flat)}'),
                       config, PARAMS)
    shutil.copytree(model_dir, est.model_dir)
    est.train(_input, max_steps=12)  # resumes the 4x2 checkpoint on another mesh
    _assert_close(params_of(reference), params_of(est))
    got = est.evaluate(eval_fn)
    np.testing.assert_allclose(got['loss'], expected['loss'], rtol=1e-5)


def test_rule_matching_nothing_is_an_error(model_dir):
  config = je.RunConfig(mesh=_mesh((4, 2)), partition_rules=[('Dense_9/kernel', P('model'))])
  with pytest.raises(ValueError, match="partition rule 'Dense_9/kernel' matches no parameter"):
    je.Estimator(mlp_model_fn, model_dir, config, PARAMS).train(_input, max_steps=1)


def test_rule_that_does_not_divide_names_the_parameter(model_dir):
  config = je.RunConfig(mesh=_mesh((4, 2)), partition_rules=[('Dense_1/kernel', P(None, 'model'))])
  with pytest.raises(ValueError, match="'params/Dense_1/kernel': dimension 3 of shape"):
    je.Estimator(mlp_model_fn, model_dir, config, PARAMS).train(_input, max_steps=1)
