"""EstimatorSpec validation per mode, its pytree form, ModeKeys, RunConfig rules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jestimator as je


def test_mode_keys_are_tf_estimator_values():
  assert (je.ModeKeys.TRAIN, je.ModeKeys.EVAL, je.ModeKeys.PREDICT) == ('train', 'eval', 'infer')


@pytest.mark.parametrize('mode,kwargs,message', [
    ('train', dict(optimizer=optax.sgd(0.1)), 'requires a loss'),
    ('train', dict(loss=jnp.zeros(())), 'requires an optimizer'),
    ('eval', dict(), 'requires a loss'),
    ('infer', dict(), 'requires predictions'),
    ('eval', dict(loss=jnp.zeros((3,))), 'must be a scalar'),
    ('train', dict(loss=jnp.zeros(()), optimizer='adam'), 'GradientTransformation'),
    ('eval', dict(loss=jnp.zeros(()), eval_metrics={'loss': None}), 'reserved'),
    ('fit', dict(), 'mode must be one of'),
])
def test_spec_requirements_per_mode(mode, kwargs, message):
  with pytest.raises((ValueError, TypeError), match=message):
    je.EstimatorSpec(mode, **kwargs)


def test_spec_is_a_pytree_with_static_mode_and_optimizer():
  opt = optax.sgd(0.1)
  spec = je.EstimatorSpec('train', loss=jnp.ones((1,)), optimizer=opt,
                          predictions={'p': jnp.arange(3.0)})
  leaves, treedef = jax.tree.flatten(spec)
  assert len(leaves) == 2  # predictions['p'] and loss
  doubled = jax.tree.unflatten(treedef, [x * 2 for x in leaves])
  assert doubled.mode == 'train' and doubled.optimizer is opt
  np.testing.assert_allclose(doubled.loss, 2.0)
  assert spec.loss.shape == ()


def test_run_config_checkpoint_cadence_follows_tf_estimator():
  assert je.RunConfig().save_checkpoints_secs == 600
  assert je.RunConfig().save_checkpoints_steps is None
  by_steps = je.RunConfig(save_checkpoints_steps=10)
  assert by_steps.save_checkpoints_secs is None
  with pytest.raises(ValueError, match='cannot both be set'):
    je.RunConfig(save_checkpoints_steps=10, save_checkpoints_secs=5)
  assert je.RunConfig().replace(save_checkpoints_steps=7).save_checkpoints_secs is None
  back = by_steps.replace(save_checkpoints_secs=30)
  assert (back.save_checkpoints_steps, back.save_checkpoints_secs) == (None, 30)
  assert je.RunConfig(seed=3).replace(model_dir='x').seed == 3


def test_run_config_rejects_bad_values():
  with pytest.raises(ValueError, match='log_step_count_steps'):
    je.RunConfig(log_step_count_steps=0)
  mesh = jax.sharding.Mesh(np.array(jax.devices()), ('batch',))
  with pytest.raises(ValueError, match="data_axis 'data'"):
    je.RunConfig(mesh=mesh)


def test_make_mesh_fills_minus_one_and_checks_counts():
  mesh = je.distribute.make_mesh({'data': -1, 'model': 2})
  assert dict(mesh.shape) == {'data': 4, 'model': 2}
  with pytest.raises(ValueError, match='needs 3 devices; there are 8'):
    je.distribute.make_mesh({'data': 3})
