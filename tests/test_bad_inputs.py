"""A catalogue of bad inputs: each gives a clear error that names the culprit, or the
correct result; none surfaces an XLA / tracer internal.

One table, `CASES`: case id -> a small function that provokes the case, the expected
exception type (None: the call must succeed; the function checks its result) and a regex
that must name the culprit (the feature / label / column / head / variable, expected vs
got). Every raised message is also checked for XLA and tracer internals.

Speed: one tiny model_dir (2 steps, checkpoints 1 and 2) is trained once per module and
copied where a case writes; runs use a 1-device mesh unless the device count matters.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow as tf
from jax.sharding import PartitionSpec as P

import jestimator as je
import jestimator.feature_column as fc
from conftest import one_device_mesh
from models import make_data, mlp_model_fn

X, Y = make_data(64)
B = 8  # the batch size everywhere (the 8-device mesh divides it)

# What a user must never have to read: XLA and tracer internals, and tf.data's graph noise.
INTERNALS = ('Tracer', 'XlaRuntimeError', 'jaxpr', 'Incompatible shapes for broadcasting',
             'tree structures do not match', 'ConcretizationTypeError', 'ShapedArray',
             'UnexpectedTracerError', 'dot_general requires', 'INTERNAL:', 'INVALID_ARGUMENT:',
             '{{node', '{{function_node', '[Op:')


def config(**changes) -> je.RunConfig:
  base = dict(mesh=one_device_mesh(), progress_bar=False, save_checkpoints_steps=1,
              log_step_count_steps=1000)
  base.update(changes)
  if 'mesh_shape' in changes:
    base.pop('mesh')
  return je.RunConfig(**base)


def batches(features=None, labels=Y[:B], n=2):
  features = {'x': X[:B]} if features is None else features
  return lambda: [(features, labels) if labels is not None else features] * n


GOOD = batches()


class _Asks(je.hooks.Hook):
  def __init__(self, keys):
    self.keys = keys

  def requests(self):
    return je.hooks.Request(self.keys, every_n_steps=1)


def eval_input_fn():
  return tf.data.Dataset.from_tensor_slices(({'x': X[:16]}, Y[:16])).batch(B)


@dataclasses.dataclass
class Env:
  """What a case may use: the shared trained model_dir (read only), fresh directories."""
  trained: str
  tmp: Any
  vars: dict = dataclasses.field(default_factory=dict)
  _n: int = 0

  def fresh(self) -> str:
    self._n += 1
    return str(self.tmp / f'model{self._n}')

  def copy(self) -> str:
    target = self.fresh()
    shutil.copytree(self.trained, target)
    return target

  def est(self, model_dir=None, model_fn=mlp_model_fn, params=None, **changes):
    return je.Estimator(model_fn, model_dir or self.fresh(), config(**changes), params or {})

  def trained_est(self, model_fn=mlp_model_fn, params=None, **changes):
    """An Estimator on a copy of the trained model_dir (train() may write there)."""
    return self.est(self.copy(), model_fn, params, **changes)

  def reader(self, model_fn=mlp_model_fn, params=None, **changes):
    """An Estimator on the shared trained model_dir, for evaluate / predict only."""
    return self.est(self.trained, model_fn, params, **changes)


@pytest.fixture(scope='module')
def trained_dir(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('bad_inputs') / 'trained')
  est = je.Estimator(mlp_model_fn, model_dir, config(), {})
  est.train(GOOD, max_steps=2)
  est._checkpoints().wait()  # pylint: disable=protected-access
  return model_dir


# -- features ------------------------------------------------------------------------------


def scalar_feature(env):
  ds = lambda: tf.data.Dataset.from_tensor_slices(({'x': X[:, 0]}, Y))  # not batched
  env.est().train(ds, steps=1)


def scalar_label(env):
  ds = lambda: tf.data.Dataset.from_tensor_slices(({'x': X}, Y))  # not batched: y is a scalar
  env.est().train(ds, steps=1)


def sparse_feature(env):
  def input_fn():
    return {'x': tf.constant(X[:B]), 'tags': tf.sparse.from_dense(tf.ones([B, 2]))}, Y[:B]
  env.est().train(input_fn, steps=1)


def ragged_feature(env):
  def input_fn():
    tags = tf.ragged.constant([[1]] * (B // 2) + [[1, 2]] * (B // 2))
    return tf.data.Dataset.from_tensor_slices(({'x': X[:B], 'tags': tags}, Y[:B])).batch(B)
  env.est().train(input_fn, steps=1)


def string_feature(env):
  ds = lambda: tf.data.Dataset.from_tensor_slices(({'x': X, 's': ['a'] * 64}, Y)).batch(B)
  env.est().train(ds, steps=1)


def shape_change_mid_stream(env):
  good, bad = ({'x': X[:B]}, Y[:B]), ({'x': X[:B, :4]}, Y[:B])
  env.est().train(lambda: [good, good, bad], steps=5)


# -- labels --------------------------------------------------------------------------------


def head_model_fn(head):
  def model_fn(features, labels, mode):
    logits = nn.Dense(head.logits_dimension)(features['x'])
    return head.create_estimator_spec(features, mode, logits, labels, optimizer=optax.sgd(0.1))
  return model_fn


def train_head(head, labels, bad_value, bad_batch=1):
  """Trains 3 steps (a checkpoint after each) on batches whose `bad_batch` has a bad label."""
  def provoke(env):
    bad = np.array(labels, copy=True)
    bad[5] = bad_value
    data = [({'x': X[:B]}, bad if i == bad_batch else labels) for i in range(3)]
    env.est(model_fn=head_model_fn(head)).train(lambda: data, max_steps=3)
  return provoke


def unknown_string_label(env):
  head = je.heads.MultiClassHead(3, name='species', label_vocabulary=['ant', 'bee', 'cat'])
  est = je.Estimator(head_model_fn(head), env.fresh(), config(),
                     input_transforms=je.heads.host_transforms(head))
  labels = np.array(['ant'] * 7 + ['giraffe'])
  est.train(lambda: tf.data.Dataset.from_tensors(({'x': X[:B]}, labels)), max_steps=1)


def sparse_labels_for_multi_class(env):
  head = je.heads.MultiClassHead(3, name='species')
  est = je.Estimator(head_model_fn(head), env.fresh(), config(),
                     input_transforms=je.heads.host_transforms(head))
  labels = tf.sparse.from_dense(tf.constant(Y[:B, None].astype(np.int64)))
  est.train(lambda: ({'x': tf.constant(X[:B])}, labels), max_steps=1)


def wrong_label_shape_for_head(env):
  head = je.heads.MultiClassHead(3, name='species')
  env.est(model_fn=head_model_fn(head)).train(batches(labels=np.zeros((B, 3), np.int32)),
                                              max_steps=1)


def float_labels_for_multi_class(env):
  head = je.heads.MultiClassHead(3, name='species')
  env.est(model_fn=head_model_fn(head)).train(batches(labels=Y[:B].astype(np.float32)),
                                              max_steps=1)


def weight_column_missing(env):
  head = je.heads.BinaryClassHead(weight_column='w', name='spam')
  env.est(model_fn=head_model_fn(head)).train(batches(labels=(Y[:B, None] > 0).astype(np.int32)),
                                              max_steps=1)


# -- input_fns -----------------------------------------------------------------------------


def raising_generator(env):
  def broken_records():
    for i in range(10):
      if i == 3:
        raise ValueError('bad record 3 in broken_records')
      yield {'x': X[:B]}, Y[:B]
  env.est().train(broken_records, max_steps=8)


def tensor_input_fn_trains(env):
  est = env.est()
  est.train(lambda: ({'x': tf.constant(X[:B])}, tf.constant(Y[:B])), max_steps=3)
  assert int(est.get_variable_value('global_step')) == 3
  assert np.all(np.isfinite(est.get_variable_value('params/Dense_0/kernel')))


# -- model_fns -----------------------------------------------------------------------------


def spec_model_fn(**spec_changes):
  def model_fn(features, labels, mode):
    spec = mlp_model_fn(features, labels, mode, {})
    kwargs = dict(predictions=spec.predictions, loss=spec.loss, optimizer=spec.optimizer)
    kwargs.update(spec_changes)
    return je.EstimatorSpec(mode, **kwargs)
  return model_fn


def nan_loss(bad_batch):
  """The loss turns NaN at `bad_batch` (the batch carries a flag; a checkpoint per step)."""
  def model_fn(features, labels, mode):
    spec = mlp_model_fn(features, labels, mode, {})
    loss = spec.loss + jnp.where(features['nan'][0] > 0, jnp.nan, 0.0)
    return je.EstimatorSpec(mode, loss=loss, predictions=spec.predictions,
                            optimizer=spec.optimizer)

  def provoke(env):
    data = [({'x': X[:B], 'nan': np.full(B, i == bad_batch, np.int32)}, Y[:B]) for i in range(3)]
    env.est(model_fn=model_fn).train(lambda: data, max_steps=3)
  return provoke


def unreduced_loss(env):
  def model_fn(features, labels, mode):
    logits = nn.Dense(3)(features['x'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # no .mean()
    return je.EstimatorSpec(mode, loss=loss, predictions=logits, optimizer=optax.sgd(0.1))
  env.est(model_fn=model_fn).train(GOOD, max_steps=1)


def model_fn_key_error(env):
  def model_fn(features, labels, mode):
    logits = nn.Dense(3)(features['pixels'])  # the input has 'x'
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return je.EstimatorSpec(mode, loss=loss, predictions=logits, optimizer=optax.sgd(0.1))
  env.est(model_fn=model_fn).train(GOOD, max_steps=1)


# -- checkpoints ---------------------------------------------------------------------------


def corrupted_newest_falls_back(env):
  model_dir = env.copy()
  data = max(glob.glob(os.path.join(model_dir, '2', 'model', 'd', '*')), key=os.path.getsize)
  with open(data, 'r+b') as f:
    f.truncate(os.path.getsize(data) // 2)
  warnings = []
  handler = logging.Handler(logging.WARNING)
  handler.emit = lambda record: warnings.append(record.getMessage())
  logging.getLogger('jestimator').addHandler(handler)
  try:
    result = env.est(model_dir).evaluate(eval_input_fn)
  finally:
    logging.getLogger('jestimator').removeHandler(handler)
  assert result['global_step'] == 1 and np.isfinite(result['loss'])
  named = os.path.join(model_dir, '2')
  assert any(f'checkpoint {named} could not be read' in w for w in warnings), warnings


def with_optimizer(optimizer):
  def model_fn(features, labels, mode):
    spec = mlp_model_fn(features, labels, mode, {})
    return je.EstimatorSpec(mode, loss=spec.loss, predictions=spec.predictions,
                            optimizer=optimizer)
  return model_fn


HOLD_LOCK = textwrap.dedent('''
    import fcntl, json, os, socket, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                              'started': 'now'}).encode(), 0)
    print('held', flush=True)
    sys.stdin.read()
''')


def locked_model_dir(env):
  from jestimator.model_dir_lock import LOCK_NAME  # pylint: disable=import-outside-toplevel
  model_dir = env.copy()
  holder = subprocess.Popen([sys.executable, '-c', HOLD_LOCK, os.path.join(model_dir, LOCK_NAME)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'held'
    env.vars['pid'] = holder.pid
    env.est(model_dir).train(GOOD, steps=1)
  finally:
    holder.communicate('', timeout=30)


# -- heads and columns in an Estimator -----------------------------------------------------


def predict_unknown_key(env):
  list(env.reader().predict(batches(labels=None, n=1), predict_keys=['probabilities']))


def column_model_fn(columns, n=3):
  def model_fn(features, labels, mode):
    logits = nn.Dense(n)(fc.DenseFeatures(columns)(features))
    head = je.heads.MultiClassHead(n)
    return head.create_estimator_spec(features, mode, logits, labels, optimizer=optax.sgd(0.1))
  return model_fn


def identity_id_out_of_range(env):
  column = fc.categorical_column_with_identity('color', num_buckets=4)
  good = np.array([[0], [1], [2], [3], [3], [1], [0], [2]], np.int64)
  bad = np.array([[0], [1], [2], [3], [4], [1], [0], [2]], np.int64)
  est = je.Estimator(column_model_fn([fc.indicator_column(column)]), env.fresh(), config(),
                     feature_columns=[column])
  est.train(lambda: [({'color': ids}, Y[:B]) for ids in (good, bad, good)], max_steps=3)


def column_key_not_in_input(env):
  columns = [fc.numeric_column('age')]
  est = je.Estimator(column_model_fn(columns), env.fresh(), config(), feature_columns=columns)
  est.train(GOOD, max_steps=1)


def string_fed_to_identity_column(env):
  column = fc.categorical_column_with_identity('color', num_buckets=4)
  est = je.Estimator(column_model_fn([fc.indicator_column(column)]), env.fresh(), config(),
                     feature_columns=[column])
  colors = tf.constant([['red']] * B)
  est.train(lambda: ({'color': colors}, tf.constant(Y[:B])), max_steps=1)


def triple_tuple(env):
  weights = np.ones(B, np.float32)
  env.est().train(lambda: ({'x': X[:B]}, Y[:B], weights), max_steps=1)


def metric_not_a_metric(env):
  def model_fn(features, labels, mode):
    spec = mlp_model_fn(features, labels, mode, {})
    return je.EstimatorSpec(mode, loss=spec.loss, predictions=spec.predictions,
                            optimizer=spec.optimizer, eval_metrics={'acc': 0.5})
  env.est(model_fn=model_fn).evaluate(eval_input_fn)


def multi_head_model_fn(features, labels, mode):
  head = je.heads.MultiHead([je.heads.MultiClassHead(3, name='species'),
                             je.heads.RegressionHead(name='weight')])
  logits = {'species': nn.Dense(3)(features['x']), 'weight': nn.Dense(1)(features['x'])}
  return head.create_estimator_spec(features, mode, logits, labels, optimizer=optax.sgd(0.1))


def wrong_logits_dimension(env):
  def model_fn(features, labels, mode):
    head = je.heads.MultiClassHead(3, name='species')
    return head.create_estimator_spec(features, mode, nn.Dense(2)(features['x']), labels,
                                      optimizer=optax.sgd(0.1))
  env.est(model_fn=model_fn).train(GOOD, max_steps=1)


def spec_for_another_mode(env):
  def model_fn(features, labels, mode):
    spec = mlp_model_fn(features, labels, mode, {})
    return je.EstimatorSpec(je.ModeKeys.EVAL, loss=spec.loss, predictions=spec.predictions)
  env.est(model_fn=model_fn).train(GOOD, max_steps=1)


def model_fn_without_labels(env):
  def model_fn(features, mode):
    loss = jnp.mean(nn.Dense(1)(features['x']) ** 2)
    return je.EstimatorSpec(mode, loss=loss, predictions=features['x'], optimizer=optax.sgd(0.1))
  env.est(model_fn=model_fn).train(GOOD, max_steps=1)


# -- the table -----------------------------------------------------------------------------


def row(case_id, provoke, exc, match=None, **extra):
  return pytest.param(provoke, exc, match, id=case_id, **extra)


CASES = [
    # features
    row('feature_missing', lambda env: env.trained_est().train(
        batches({'z': X[:B]}), steps=1),
        ValueError, r"feature 'x' is missing.*built with features \['x'\], got \['z'\]"),
    row('feature_extra', lambda env: env.trained_est().train(
        batches({'x': X[:B], 'z': X[:B]}), steps=1),
        ValueError, r"unexpected feature 'z'.*built with features \['x'\], got \['x', 'z'\]"),
    row('feature_wrong_shape', lambda env: env.trained_est().train(
        batches({'x': X[:B, :5]}), steps=1),
        ValueError, r"feature 'x': expected shape \(batch, 8\) float32, got \(batch, 5\) float32"),
    row('feature_wrong_dtype', lambda env: env.trained_est().train(
        batches({'x': X[:B].astype(np.float64)}), steps=1),
        ValueError, r"feature 'x': expected shape \(batch, 8\) float32, got \(batch, 8\) float64"),
    row('feature_wrong_rank_in_evaluate', lambda env: env.reader().evaluate(
        batches({'x': X[:B, :, None]})),
        ValueError, r"feature 'x': expected shape \(batch, 8\) float32, got \(batch, 8, 1\)"),
    row('feature_missing_in_predict', lambda env: list(env.reader().predict(
        batches({'z': X[:B]}, labels=None))),
        ValueError, r"feature 'x' is missing"),
    row('feature_strings_without_a_column', string_feature,
        TypeError, r"feature \['s'\] holds strings.*lookup table"),
    row('feature_scalar_without_batch_dim', scalar_feature,
        ValueError, r"feature \['x'\] is a scalar.*leading batch dimension"),
    row('label_scalar_without_batch_dim', scalar_label,
        ValueError, r"\Alabels? (is|are) a scalar.*leading batch dimension"),
    row('feature_sparse_without_a_column', sparse_feature,
        TypeError, r"tags'? is a SparseTensor.*feature column"),
    row('feature_ragged_without_a_column', ragged_feature,
        TypeError, r"tags'? is a RaggedTensor.*feature column"),
    row('features_vs_labels_batch_size', lambda env: env.est().train(
        batches({'x': X[:B]}, Y[:B - 1]), steps=1),
        ValueError, r"feature 'x' has 8 examples but labels has 7"),
    row('feature_batch_sizes_differ', lambda env: env.est().train(
        batches({'x': X[:B], 'w': X[:B - 2, 0]}), steps=1),
        ValueError, r"feature '(w|x)' has \d examples but feature '(w|x)' has \d"),
    row('feature_shape_change_mid_stream', shape_change_mid_stream,
        ValueError, r"feature 'x': expected shape \(batch, 8\) float32, got \(batch, 4\)"),
    row('label_dtype_change_after_checkpoint', lambda env: env.trained_est().train(
        batches(labels=Y[:B].astype(np.float32)), steps=1),
        ValueError, r"labels?: expected shape \(batch\) int32, got \(batch\) float32"),

    # labels
    row('labels_none_in_train', lambda env: env.est().train(batches(labels=None), steps=1),
        ValueError, r"labels are None in mode 'train'"),
    row('labels_none_in_eval', lambda env: env.reader().evaluate(batches(labels=None)),
        ValueError, r"labels are None in mode 'eval'"),
    row('multi_class_label_3',
        train_head(je.heads.MultiClassHead(3, name='species'), Y[:B], 3),
        je.InvalidInputError, r"At global step 1: MultiClassHead 'species': invalid label 3; "
                              r'labels must be <= n_classes - 1 \(n_classes = 3\)\. '
                              r'The last checkpoint \(step 1\) is kept'),
    row('invalid_label_before_any_checkpoint',
        train_head(je.heads.MultiClassHead(3, name='species'), Y[:B], 3, bad_batch=0),
        je.InvalidInputError, r"\A(?!.*checkpoint \(step 0\)).*At global step 0: "
                              r"MultiClassHead 'species': invalid label 3"),
    row('multi_class_label_minus_1',
        train_head(je.heads.MultiClassHead(3, name='species'), Y[:B], -1),
        je.InvalidInputError, r"MultiClassHead 'species': invalid label -1; labels must be >= 0"),
    row('binary_label_2',
        train_head(je.heads.BinaryClassHead(name='spam'), np.zeros((B, 1), np.int32), 2),
        je.InvalidInputError, r"BinaryClassHead 'spam': invalid label 2(\.0)?; labels must be "
                              r'<= n_classes - 1 \(n_classes = 2\)'),
    row('logistic_label_1_5',
        train_head(je.heads.LogisticRegressionHead(name='p'), np.zeros((B, 1), np.float32), 1.5),
        je.InvalidInputError, r"LogisticRegressionHead 'p': invalid label 1.5; labels must be in "
                              r'range \[0, 1\]'),
    row('multi_label_label_2',
        train_head(je.heads.MultiLabelHead(3, name='tags'), np.zeros((B, 3), np.int32), 2),
        je.InvalidInputError, r"MultiLabelHead 'tags': invalid label 2; labels must be 0 or 1"),
    row('label_not_in_label_vocabulary', unknown_string_label,
        ValueError, r"MultiClassHead 'species'.*giraffe"),
    row('sparse_labels_for_multi_class_head', sparse_labels_for_multi_class,
        (TypeError, ValueError), r"MultiClassHead 'species'.*(SparseTensor|sparse)"),
    row('labels_dict_for_a_single_head', lambda env: env.est(
        model_fn=head_model_fn(je.heads.MultiClassHead(3, name='species'))).train(
            batches(labels={'species': Y[:B]}), max_steps=1),
        ValueError, r"MultiClassHead 'species': labels must be an array, got a dict with keys "
                    r"\['species'\]"),
    row('multi_head_labels_missing_a_head', lambda env: env.est(
        model_fn=multi_head_model_fn).train(batches(labels={'species': Y[:B]}), max_steps=1),
        ValueError, r"MultiHead: labels has missing values for head\(s\): \['weight'\]"),
    row('logits_dimension_for_head', wrong_logits_dimension,
        ValueError, r"MultiClassHead 'species': logits shape must be \[D0, D1, ... DN, 3\], "
                    r'got \(8, 2\)'),
    row('labels_wrong_shape_for_head', wrong_label_shape_for_head,
        ValueError, r"MultiClassHead 'species'.*\(8, 1\).*got \(8, 3\)"),
    row('float_labels_for_multi_class_head', float_labels_for_multi_class,
        ValueError, r"MultiClassHead 'species'.*integer class ids.*float32"),
    row('weight_column_not_in_features', weight_column_missing,
        ValueError, r"weight_column 'w' is not in features.*\['x'\]"),

    # input_fns
    row('input_fn_not_callable', lambda env: env.est().train(5, steps=1),
        TypeError, r'input_fn must be callable, got int'),
    row('input_fn_unknown_required_argument', lambda env: env.est().train(
        lambda batch_size: GOOD(), steps=1),
        ValueError, r"input_fn has required arguments \['batch_size'\]"),
    row('input_fn_returns_an_int', lambda env: env.est().train(lambda: 3, steps=1),
        TypeError, r'input_fn must return a tf.data.Dataset.*got int'),
    row('input_fn_returns_none', lambda env: env.est().train(lambda: None, steps=1),
        TypeError, r'input_fn must return a tf.data.Dataset.*got NoneType'),
    row('input_fn_empty_dataset', lambda env: env.est().train(
        lambda: tf.data.Dataset.from_tensor_slices(({'x': X}, Y)).take(0).batch(B), steps=1),
        ValueError, r"input_fn returned an empty dataset \(mode='train'\)"),
    row('input_fn_generator_raises', raising_generator,
        ValueError, r'^bad record 3 in broken_records$'),
    row('input_fn_returns_tensors_trains', tensor_input_fn_trains, None),
    row('input_fn_returns_a_triple', triple_tuple,
        (TypeError, ValueError), r"tuple of 3.*\(features, labels\)"),
    row('numpy_input_fn_lengths_differ', lambda env: je.inputs.numpy_input_fn(
        {'x': X}, Y[:60], shuffle=False),
        ValueError, r'numpy_input_fn: x has 64 examples but y has 60'),
    row('numpy_input_fn_without_shuffle', lambda env: je.inputs.numpy_input_fn({'x': X}, Y),
        ValueError, r'numpy_input_fn: shuffle must be given explicitly as a bool, got None'),
    row('evaluate_later_batch_larger_than_first', lambda env: env.reader().evaluate(
        lambda: [({'x': X[:8]}, Y[:8]), ({'x': X[:16]}, Y[:16])]),
        ValueError, r'a batch of 16 examples is larger than the first batch \(8\)'),

    # configs
    row('config_both_checkpoint_cadences', lambda env: je.RunConfig(
        save_checkpoints_steps=10, save_checkpoints_secs=5),
        ValueError, r'save_checkpoints_steps and save_checkpoints_secs cannot both be set '
                    r'\(got 10 and 5\)'),
    row('config_steps_per_loop_0', lambda env: je.RunConfig(steps_per_loop=0),
        ValueError, r'steps_per_loop must be an int >= 1, got 0'),
    row('config_progress_bar', lambda env: je.RunConfig(progress_bar='yes'),
        ValueError, r"progress_bar must be True, False or 'auto', got 'yes'"),
    row('config_mesh_without_data_axis', lambda env: je.RunConfig(
        mesh=jax.sharding.Mesh(np.array(jax.devices()), ('batch',))),
        ValueError, r"mesh axes \('batch',\) do not include data_axis 'data'"),
    row('config_runner_name', lambda env: env.est(runner='pmap'),
        ValueError, r"runner must be 'jit' or 'shard_map', got 'pmap'"),
    row('config_precision_name', lambda env: env.est(precision='fp16'),
        ValueError, r"precision must be one of .*got 'fp16'"),
    row('config_shard_map_with_partition_rules', lambda env: env.est(
        runner='shard_map', partition_rules='fsdp'),
        ValueError, r'shard_map runner replicates the train state'),
    row('config_model_dir_differs', lambda env: je.Estimator(
        mlp_model_fn, env.fresh(), je.RunConfig(model_dir=env.fresh())),
        ValueError, r"model_dir '.*model\d+' differs from config.model_dir '.*model\d+'"),
    row('config_accumulation_does_not_divide_batch', lambda env: env.est(
        gradient_accumulation_steps=3).train(GOOD, max_steps=1),
        ValueError, r'gradient_accumulation_steps 3 does not divide the batch size 8'),
    row('config_batch_not_divisible_by_data_axis', lambda env: je.Estimator(
        mlp_model_fn, env.fresh(), je.RunConfig(progress_bar=False)).train(
            batches({'x': X[:12]}, Y[:12]), steps=1),
        ValueError, r"global batch size 12 is not divisible by the 'data' mesh axis size 8"),
    row('config_keep_checkpoint_max_0', lambda env: je.RunConfig(keep_checkpoint_max=0),
        ValueError, r'keep_checkpoint_max must be a positive int or None, got 0'),
    row('config_save_checkpoints_steps_float', lambda env: je.RunConfig(
        save_checkpoints_steps=2.5),
        ValueError, r'save_checkpoints_steps must be a positive int or None, got 2.5'),
    row('config_not_a_run_config', lambda env: je.Estimator(
        mlp_model_fn, env.fresh(), {'seed': 1}),
        TypeError, r'config must be a (je\.)?RunConfig.*got dict'),
    row('config_seed_not_an_int', lambda env: env.est(seed='a').train(GOOD, max_steps=1),
        (TypeError, ValueError), r"seed must be an int.*'a'"),

    # train / evaluate arguments
    row('train_steps_and_max_steps', lambda env: env.est().train(GOOD, steps=1, max_steps=2),
        ValueError, r'Can not provide both steps and max_steps'),
    row('train_steps_0', lambda env: env.est().train(GOOD, steps=0),
        ValueError, r'Must specify steps > 0, given: 0'),
    row('train_max_steps_negative', lambda env: env.est().train(GOOD, max_steps=-3),
        ValueError, r'Must specify max_steps > 0, given: -3'),
    row('evaluate_steps_0', lambda env: env.reader().evaluate(eval_input_fn, steps=0),
        ValueError, r'Must specify steps > 0, given: 0'),
    row('train_steps_not_an_int', lambda env: env.est().train(GOOD, steps='5'),
        (TypeError, ValueError), r"steps must be an int.*'5'"),
    row('train_max_steps_not_an_int', lambda env: env.est().train(GOOD, max_steps=2.5),
        (TypeError, ValueError), r'max_steps must be an int.*2\.5'),
    row('train_hook_not_a_hook', lambda env: env.est().train(GOOD, max_steps=1, hooks=[object()]),
        (TypeError, ValueError), r'[Hh]ook.*got object'),
    row('evaluate_hook_not_a_hook', lambda env: env.reader().evaluate(
        eval_input_fn, hooks=[object()]), TypeError, r'evaluate: hooks must be .*got object'),
    row('hook_requests_an_unknown_key', lambda env: env.est().train(
        GOOD, max_steps=1, hooks=[_Asks(['los'])]), ValueError,
        r"_Asks requests \['los'\], which 'train' does not produce; the keys it can have are "
        r"\['accuracy', 'global_step', 'loss'\]"),

    # model_fns
    row('model_fn_returns_a_dict', lambda env: env.est(
        model_fn=lambda features, labels, mode: {'loss': 0.0}).train(GOOD, steps=1),
        TypeError, r"model_fn must return an EstimatorSpec, got dict \(mode='train'\)"),
    row('model_fn_without_features', lambda env: je.Estimator(lambda inputs, labels: None),
        ValueError, r'must take an argument named "features"; its arguments are '
                    r"\('inputs', 'labels'\)"),
    row('model_fn_unknown_argument', lambda env: je.Estimator(
        lambda features, labels, mode, hparams: None),
        ValueError, r"model_fn has unknown arguments \['hparams'\]"),
    row('train_spec_without_optimizer', lambda env: env.est(
        model_fn=spec_model_fn(optimizer=None)).train(GOOD, steps=1),
        ValueError, r"mode='train' requires an optimizer"),
    row('train_spec_without_loss', lambda env: env.est(
        model_fn=spec_model_fn(loss=None)).train(GOOD, steps=1),
        ValueError, r"mode='train' requires a loss"),
    row('spec_loss_not_a_scalar', unreduced_loss,
        ValueError, r'loss must be a scalar, got shape \(8,\)'),
    row('model_fn_reads_a_missing_feature', model_fn_key_error,
        KeyError, r"'pixels'"),
    row('model_fn_spec_for_another_mode', spec_for_another_mode,
        ValueError, r"model_fn was called with mode='train' but returned a spec for mode='eval'"),
    row('model_fn_without_labels_given_labels', model_fn_without_labels,
        ValueError, r'model_fn does not take "labels", but the input_fn returned labels'),
    row('spec_optimizer_a_string', lambda env: je.EstimatorSpec(
        je.ModeKeys.TRAIN, loss=0.0, optimizer='adam'),
        TypeError, r'optimizer must be an optax GradientTransformation, got str'),
    row('spec_metric_named_loss', lambda env: je.EstimatorSpec(
        je.ModeKeys.EVAL, loss=0.0, eval_metrics={'loss': None}),
        ValueError, r"eval_metrics may not use the reserved name 'loss'"),
    row('spec_metric_not_a_metric', metric_not_a_metric,
        (TypeError, ValueError), r"'acc'.*[Mm]etric.*float"),
    row('nan_loss', nan_loss(bad_batch=1),
        je.NanLossDuringTrainingError, r'NaN loss during training at global step 1; the last '
                                       r'checkpoint \(step 1\) is kept'),
    row('nan_loss_before_any_checkpoint', nan_loss(bad_batch=0),
        je.NanLossDuringTrainingError, r'\A(?!.*checkpoint \(step 0\)).*NaN loss during '
                                       r'training at global step 0'),

    # checkpoints
    row('checkpoint_path_not_a_checkpoint', lambda env: env.reader().evaluate(
        eval_input_fn, checkpoint_path=os.path.join(env.trained, 'model.ckpt-2')),
        ValueError, r"checkpoint_path '.*model.ckpt-2' is not a checkpoint: expected "
                    r"'<model_dir>/<step>'"),
    row('checkpoint_path_missing_step', lambda env: env.reader().evaluate(
        eval_input_fn, checkpoint_path=os.path.join(env.trained, '7')),
        ValueError, r"checkpoint_path '.*/7' is not a checkpoint"),
    row('unknown_variable_name', lambda env: env.reader().get_variable_value('params/nope'),
        ValueError, r"variable 'params/nope' not in the checkpoint; names: .*"
                    r"'params/Dense_0/kernel'"),
    row('no_checkpoint_yet', lambda env: env.est().get_variable_value('params/Dense_0/kernel'),
        ValueError, r'no checkpoint in model_dir .*model\d+; train first'),
    row('checkpoint_of_another_model_train', lambda env: env.trained_est(
        params={'hidden': 32}).train(GOOD, steps=1),
        je.CheckpointMismatchError, r"'params/Dense_0/kernel' \(checkpoint \(8, 16\) float32, "
                                    r'this model \(8, 32\) float32\)'),
    row('checkpoint_of_another_model_evaluate', lambda env: env.reader(
        params={'hidden': 32}).evaluate(eval_input_fn),
        je.CheckpointMismatchError, r"'params/Dense_0/kernel' \(checkpoint \(8, 16\) float32, "
                                    r'this model \(8, 32\) float32\)'),
    row('checkpoint_of_another_optimizer', lambda env: env.trained_est(
        model_fn=with_optimizer(optax.sgd(0.1, momentum=0.9))).train(GOOD, steps=1),
        je.CheckpointMismatchError, r"optimizer state in the checkpoint .*/2 differs.*"
                                    r"not in the checkpoint: 'opt_state/0/trace/Dense_0/bias'"),
    row('corrupted_newest_checkpoint_falls_back', corrupted_newest_falls_back, None),
    row('model_dir_is_a_file', lambda env: (
        open(env.tmp / 'a_file', 'w').close(),
        env.est(str(env.tmp / 'a_file')).train(GOOD, max_steps=1)),
        ValueError, r"model_dir '.*a_file' is a file, not a directory"),
    row('model_dir_locked_by_a_live_process', locked_model_dir,
        je.ModelDirLockedError,
        lambda env: rf"model_dir '.*' is being trained by pid {env.vars['pid']} on host "
                    rf"'{re.escape(socket.gethostname())}'"),

    # heads
    row('head_n_classes_2', lambda env: je.heads.MultiClassHead(n_classes=2),
        ValueError, r'MultiClassHead: n_classes must be > 2: 2'),
    row('head_multi_label_n_classes_1', lambda env: je.heads.MultiLabelHead(n_classes=1),
        ValueError, r'n_classes must be > 1'),
    row('head_vocabulary_size', lambda env: je.heads.MultiClassHead(
        3, name='species', label_vocabulary=['a', 'b']),
        ValueError, r"MultiClassHead 'species': label_vocabulary has 2 entries but.*3"),
    row('head_vocabulary_duplicates', lambda env: je.heads.BinaryClassHead(
        label_vocabulary=['yes', 'yes']),
        ValueError, r"label_vocabulary has duplicates: \['yes', 'yes'\]"),
    row('head_vocabulary_a_string', lambda env: je.heads.MultiClassHead(
        3, label_vocabulary='abc'),
        ValueError, r'label_vocabulary should be a list or a tuple'),
    row('predict_keys_not_in_predictions', predict_unknown_key,
        ValueError, r"\['class_ids', 'logits'\].*\['probabilities'\]"),

    # feature columns
    row('identity_id_out_of_range', identity_id_out_of_range,
        je.InvalidInputError, r"At global step 1: feature column 'color' "
                              r'\(categorical_column_with_identity without default_value\): '
                              r'id 4 is not in \[0, 4\)'),
    row('column_key_not_in_input', column_key_not_in_input,
        ValueError, r"column 'age'.*feature 'age' is not in the input features \['x'\]"),
    row('string_fed_to_identity_column', string_fed_to_identity_column,
        ValueError, r"column 'color'.*holds string values"),
    row('vocabulary_list_duplicates', lambda env: fc.categorical_column_with_vocabulary_list(
        'color', ['red', 'blue', 'red']),
        ValueError, r"'color'.*(duplicate|Duplicate).*red"),
    row('vocabulary_list_empty', lambda env: fc.categorical_column_with_vocabulary_list(
        'color', []),
        ValueError, r"'color'.*vocabulary_list"),
    row('vocabulary_file_missing', lambda env: fc.categorical_column_with_vocabulary_file(
        'color', str(env.tmp / 'nope.txt')),
        ValueError, r"vocabulary_file 'color'.*nope.txt.*does not exist"),
    row('hash_bucket_size_0', lambda env: fc.categorical_column_with_hash_bucket('h', 0),
        ValueError, r"hash_bucket 'h'.*at least 1, got 0"),
    row('identity_num_buckets_0', lambda env: fc.categorical_column_with_identity('c', 0),
        ValueError, r"'c'.*num_buckets.*0"),
    row('bucketized_boundaries_unsorted', lambda env: fc.bucketized_column(
        fc.numeric_column('age'), [30, 18, 65]),
        ValueError, r"'age'.*boundaries.*sorted"),
    row('embedding_dimension_0', lambda env: fc.embedding_column(
        fc.categorical_column_with_identity('c', 4), dimension=0),
        ValueError, r"embedding_column 'c_embedding': dimension must be an int >= 1, got 0"),

    # meshes
    row('mesh_shape_needs_more_devices', lambda env: env.est(mesh_shape={'data': 3}),
        ValueError, r"mesh_shape \{'data': 3\} needs 3 devices; there are 8"),
    row('mesh_shape_does_not_divide_devices', lambda env: env.est(
        mesh_shape={'data': -1, 'model': 3}),
        ValueError, r"mesh_shape \{'data': -1, 'model': 3\}: 8 devices are not divisible by 3"),
    row('mesh_shape_without_data_axis', lambda env: env.est(mesh_shape={'batch': -1}),
        ValueError, r"mesh_shape \{'batch': -1\} has no 'data' axis"),
    row('partition_rule_matches_nothing', lambda env: env.est(
        partition_rules=[('Dense_9/kernel', P(None, 'data'))]).train(GOOD, max_steps=1),
        ValueError, r"partition rule 'Dense_9/kernel' matches no parameter"),
    row('partition_rule_names_the_parameters', lambda env: env.est(
        partition_rules=[('Dense_9/kernel', P(None, 'data'))]).train(GOOD, max_steps=1),
        ValueError, r"'Dense_9/kernel' matches no parameter.*'params/Dense_0/kernel'"),
    row('partition_rule_unknown_mesh_axis', lambda env: env.est(
        partition_rules=[('Dense_0/kernel', P(None, 'model'))]).train(GOOD, max_steps=1),
        ValueError, r"partition rule for 'params/Dense_0/kernel': mesh has no axis 'model' "
                    r"\(axes \('data',\)\)"),
    row('partition_rules_unknown_name', lambda env: env.est(partition_rules='tp'),
        ValueError, r"partition_rules must be a list of \(regex, PartitionSpec\), None or "
                    r"'fsdp'; got 'tp'"),
]


def _internals_in(message: str) -> list[str]:
  return [word for word in INTERNALS if word in message]


@pytest.mark.parametrize('provoke,exc,match', CASES)
def test_bad_input(provoke: Callable, exc, match, trained_dir, tmp_path, caplog):
  env = Env(trained_dir, tmp_path)
  with caplog.at_level(logging.WARNING, logger='jestimator'):
    try:
      provoke(env)
    except Exception as e:  # pylint: disable=broad-except
      raised = e
    else:
      raised = None
  if exc is None:  # a correct result: provoke checked it
    assert raised is None, f'{type(raised).__name__}: {raised}'
    assert not _internals_in(caplog.text), caplog.text
    return
  assert raised is not None, f'nothing raised; expected {exc}'
  message = f'{type(raised).__name__}: {raised}'
  assert isinstance(raised, exc), message
  assert not type(raised).__module__.startswith(('jax', 'jaxlib')), message
  assert not _internals_in(message), message
  pattern = match(env) if callable(match) else match
  assert re.search(pattern, str(raised), re.S), f'{pattern!r} not in {message}'


def test_the_catalogue_is_large_enough():
  assert len(CASES) >= 40
  assert len({c.id for c in CASES}) == len(CASES)
