"""`SampledSoftmaxHead`: a softmax over a huge label space, from the last hidden layer.

The head owns the output layer, so it never has to see `[batch, n_classes]`
logits in training:

  TRAIN          `sampled_softmax_loss` (tf.nn's) over the labels and `num_sampled`
                 candidates drawn once per batch; only `[batch, 1 + num_sampled]`
                 logits are formed.
  EVAL, PREDICT  the full softmax, class block by class block (a `lax.scan` over
                 `eval_chunk_size` classes) keeping a running top-k and a running
                 logsumexp, so memory is `[batch, eval_chunk_size]`, not
                 `[batch, n_classes]`.

  def model_fn(features, labels, mode):
    h = nn.relu(nn.Dense(128)(features['x']))
    head = je.heads.SampledSoftmaxHead(n_classes=200_000, num_sampled=1024)
    return head.create_estimator_spec(features, mode, h, labels, optimizer=optax.adam(1e-3))

Its variables live under the head's module name (`sampled_softmax`, or the
head's `name`): `params/<module>/embedding` `[n_classes, hidden]` and
`params/<module>/bias` `[n_classes]`, so a partition rule such as
`('sampled_softmax/embedding', P('model', None))` shards the classes over a
model axis. The 'learned_unigram' sampler keeps its class counts in the model
state (`candidate_sampler/<module>/counts`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jestimator.heads import base, candidate_sampling
from jestimator.heads.keys import MetricKeys as MK, summary_key
from jestimator.heads.losses import (Reduction, add_regularization, compute_weighted_loss,
                                     regularization_loss)
from jestimator.metrics import Accuracy, Mean
from jestimator.spec import EstimatorSpec, ModeKeys

SAMPLERS = ('log_uniform', 'uniform', 'learned_unigram')
COUNTS_COLLECTION = 'candidate_sampler'
TOP_K_CLASS_IDS = 'top_k_class_ids'
TOP_K_PROBABILITIES = 'top_k_probabilities'
CLASS_IDS = 'class_ids'
RECALL_AT_K = 'recall_at_%d'


def top_k_logits(inputs: jax.Array, weights: jax.Array, biases: jax.Array, k: int,
                 chunk_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Top-k of `inputs @ weights.T + biases` and its logsumexp, `chunk_size` classes at a time.

  Args:
    inputs: `[batch, dim]`; weights `[n_classes, dim]`; biases `[n_classes]`.
    k: how many classes to keep (<= n_classes).
    chunk_size: classes per block. When it does not divide n_classes the last
      block is the last `chunk_size` classes, with the ones an earlier block
      already covered set to -inf (so nothing is copied or padded).

  Returns:
    `(values [batch, k] float32, class ids [batch, k] int32, logsumexp [batch])`;
    ties go to the lowest class id, as argmax.
  """
  n_classes = weights.shape[0]
  size = min(chunk_size, n_classes)
  n_chunks = -(-n_classes // size)
  inputs = inputs.astype(jnp.float32)
  batch = inputs.shape[0]

  def block(carry, i):
    top_v, top_i, running_max, running_sum = carry
    start = jnp.minimum(i * size, n_classes - size)
    w = jax.lax.dynamic_slice_in_dim(weights, start, size, 0).astype(jnp.float32)
    b = jax.lax.dynamic_slice_in_dim(biases, start, size, 0).astype(jnp.float32)
    ids = start + jnp.arange(size, dtype=jnp.int32)
    logits = jnp.where(ids >= i * size, inputs @ w.T + b, -jnp.inf)  # [batch, size]
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=-1))
    running_sum = (running_sum * jnp.exp(running_max - new_max)
                   + jnp.sum(jnp.exp(logits - new_max[:, None]), axis=-1))
    v, j = jax.lax.top_k(logits, min(k, size))
    v, j = jnp.concatenate([top_v, v], -1), jnp.concatenate([top_i, ids[j]], -1)
    top_v, pick = jax.lax.top_k(v, k)  # earlier (lower) ids first among ties
    return (top_v, jnp.take_along_axis(j, pick, -1), new_max, running_sum), None

  init = (jnp.full((batch, k), -jnp.inf, jnp.float32), jnp.zeros((batch, k), jnp.int32),
          jnp.full((batch,), -jnp.inf, jnp.float32), jnp.zeros((batch,), jnp.float32))
  (top_v, top_i, running_max, running_sum), _ = jax.lax.scan(
      block, init, jnp.arange(n_chunks, dtype=jnp.int32))
  return top_v, top_i, running_max + jnp.log(running_sum)


def _default_embedding_init():
  """Normal with stddev 1/sqrt(hidden) (fan-in over the hidden axis), as tf's word2vec."""
  return nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal', in_axis=-1,
                                          out_axis=-2)


class ClassEmbedding(nn.Module):
  """The head's output layer: `embedding` `[n_classes, hidden]`, `bias` `[n_classes]`."""

  n_classes: int
  hidden: int
  sampler: str
  embedding_init: Callable
  param_dtype: Any = jnp.float32

  def setup(self):
    self.embedding = self.param('embedding', self.embedding_init, (self.n_classes, self.hidden),
                                self.param_dtype)
    self.bias = self.param('bias', nn.initializers.zeros, (self.n_classes,), self.param_dtype)
    if self.sampler == 'learned_unigram':
      self.counts = self.variable(COUNTS_COLLECTION, 'counts', jnp.ones, (self.n_classes,),
                                  jnp.float32)

  def sampled_loss(self, inputs, labels, num_sampled: int, remove_accidental_hits: bool,
                   rng_stream: str) -> jax.Array:
    """Per-example sampled softmax loss `[batch]`; labels int `[batch, 1]`."""
    if not self.has_rng(rng_stream):
      raise ValueError(f'SampledSoftmaxHead: training draws its candidates from the Flax RNG '
                       f'stream {rng_stream!r}, which is not fed; add it to '
                       f'RunConfig.rng_streams (or pass rngs={{{rng_stream!r}: key}}).')
    key = self.make_rng(rng_stream)
    args = (labels, 1, num_sampled, True, self.n_classes)
    if self.sampler == 'log_uniform':
      sampled = candidate_sampling.log_uniform_candidate_sampler(*args, key=key)
    elif self.sampler == 'uniform':
      sampled = candidate_sampling.uniform_candidate_sampler(*args, key=key)
    else:
      sampled, counts = candidate_sampling.learned_unigram_candidate_sampler(
          *args, key=key, counts=self.counts.value)
      if self.is_mutable_collection(COUNTS_COLLECTION) and not self.is_initializing():
        self.counts.value = counts
    return candidate_sampling.sampled_softmax_loss(
        self.embedding, self.bias, labels, inputs, num_sampled, self.n_classes,
        sampled_values=sampled, remove_accidental_hits=remove_accidental_hits)

  def full_softmax(self, inputs, labels, k: int, chunk_size: int) -> dict:
    """Chunked top-k and logsumexp; with labels also their logits `[batch]`."""
    top_v, top_i, lse = top_k_logits(inputs, self.embedding, self.bias, k, chunk_size)
    out = {'top_v': top_v, 'top_i': top_i, 'lse': lse}
    if labels is not None:
      safe = jnp.clip(labels[:, 0], 0, self.n_classes - 1)
      w = self.embedding[safe].astype(jnp.float32)
      out['label_logit'] = (jnp.sum(inputs.astype(jnp.float32) * w, axis=-1)
                            + self.bias[safe].astype(jnp.float32))
    return out


class SampledSoftmaxHead(base.Head):
  """Multi-class classification over `n_classes` classes from the last hidden layer.

  `create_estimator_spec(features, mode, last_layer, labels, optimizer)` takes
  `last_layer` `[batch, hidden]` instead of logits (see the module docstring).
  Labels: int class ids `[batch]` or `[batch, 1]` in `[0, n_classes)`.

  Predictions (EVAL, PREDICT): `top_k_class_ids` `[batch, top_k]` int32 (best
  first), `top_k_probabilities` `[batch, top_k]` (full-softmax probabilities),
  `class_ids` `[batch, 1]` (argmax). TRAIN has no predictions.

  Metrics (EVAL): `average_loss` (full softmax cross entropy; also the eval
  `loss`, reduced as MultiClassHead), `accuracy`, and `recall_at_<k>` for each k
  in `recall_at` (the weighted fraction of examples whose label is among the k
  best classes), all weighted and padding-masked like the other heads. TRAIN
  reports `average_loss`: the mean sampled loss.

  Args:
    n_classes: number of classes (> 2).
    num_sampled: negatives drawn per batch (unique), <= n_classes.
    sampler: 'log_uniform' (tf.nn.sampled_softmax_loss's default: classes
      sorted by decreasing frequency), 'uniform', or 'learned_unigram' (counts
      of the labels seen in training, starting at 1, kept in the model state;
      with the shard_map runner the per-device counts are averaged).
    remove_accidental_hits: drop a sampled class equal to the example's label.
    top_k: how many classes the predictions list.
    recall_at: the k of the `recall_at_<k>` metrics.
    eval_chunk_size: classes per block of the full softmax in EVAL/PREDICT.
    weight_column, loss_reduction, name: as MultiClassHead.
    rng_stream: the Flax RNG stream of the candidate draws (RunConfig feeds
      'dropout' every step by default).
    embedding_init, param_dtype: of the output embedding.
  """

  def __init__(self, n_classes: int, num_sampled: int, sampler: str = 'log_uniform',
               remove_accidental_hits: bool = True, top_k: int = 10,
               recall_at: Sequence[int] = (1, 5, 10), eval_chunk_size: int = 8192,
               weight_column: str | None = None,
               loss_reduction: str = Reduction.SUM_OVER_BATCH_SIZE, name: str | None = None,
               rng_stream: str = 'dropout', embedding_init: Callable | None = None,
               param_dtype: Any = jnp.float32):
    super().__init__(name=name, weight_column=weight_column, loss_reduction=loss_reduction)
    if not isinstance(n_classes, (int, np.integer)) or n_classes <= 2:
      raise ValueError(f'SampledSoftmaxHead: n_classes must be an int > 2, got {n_classes!r}.')
    if not isinstance(num_sampled, (int, np.integer)) or not 1 <= num_sampled <= n_classes:
      raise ValueError(f'SampledSoftmaxHead: num_sampled must be in [1, n_classes = '
                       f'{n_classes}], got {num_sampled!r}.')
    if sampler not in SAMPLERS:
      raise ValueError(f'SampledSoftmaxHead: sampler must be one of {SAMPLERS}, got {sampler!r}.')
    recall_at = tuple(int(k) for k in recall_at)
    for what, k in [('top_k', top_k)] + [('recall_at', k) for k in recall_at]:
      if not 1 <= k <= n_classes:
        raise ValueError(f'SampledSoftmaxHead: {what} {k} must be in [1, n_classes = '
                         f'{n_classes}].')
    if eval_chunk_size < 1:
      raise ValueError(f'SampledSoftmaxHead: eval_chunk_size must be >= 1, got '
                       f'{eval_chunk_size}.')
    self._n_classes, self._num_sampled, self._sampler = int(n_classes), int(num_sampled), sampler
    self._remove_accidental_hits = remove_accidental_hits
    self._top_k, self._recall_at, self._chunk = int(top_k), recall_at, int(eval_chunk_size)
    self._rng_stream = rng_stream
    self._embedding_init = embedding_init or _default_embedding_init()
    self._param_dtype = param_dtype

  @property
  def logits_dimension(self) -> int:
    return self._n_classes

  def _no_logits(self, *args, **kwargs):
    raise NotImplementedError(f'{self._describe()} starts from the last hidden layer, not from '
                              'logits: use create_estimator_spec(features, mode, last_layer, '
                              '...); it does not go in a MultiHead.')

  loss = metrics = predictions = unweighted_loss_and_weights = _no_logits

  @property
  def n_classes(self) -> int:
    return self._n_classes

  @property
  def module_name(self) -> str:
    """Where the head's variables live: `params/<module_name>/embedding`, `.../bias`."""
    return self._name or 'sampled_softmax'

  def _layer(self, hidden: int) -> ClassEmbedding:
    return ClassEmbedding(self._n_classes, hidden, self._sampler, self._embedding_init,
                          self._param_dtype, name=self.module_name)

  def _labels(self, labels: Any, batch: int) -> jax.Array:
    if labels is None:
      raise ValueError(f'{self._describe()}: labels must not be None.')
    labels = jnp.asarray(labels)
    if labels.shape == (batch,):
      labels = labels[:, None]
    if labels.shape != (batch, 1):
      raise ValueError(f'{self._describe()}: labels must be [batch] or [batch, 1] = '
                       f'{(batch, 1)}, got {labels.shape}.')
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise ValueError(f'{self._describe()}: labels must be integer class ids, got dtype '
                       f'{labels.dtype}.')
    base.check_label_range(labels, self._n_classes, self._describe())
    return labels.astype(jnp.int32)

  def _predictions(self, full: dict) -> dict:
    top_v, top_i = full['top_v'][:, :self._top_k], full['top_i'][:, :self._top_k]
    return {TOP_K_CLASS_IDS: top_i,
            TOP_K_PROBABILITIES: jnp.exp(top_v - full['lse'][:, None]),
            CLASS_IDS: full['top_i'][:, :1]}

  def create_estimator_spec(self, features: Mapping[str, Any] | None, mode: str,
                            last_layer: jax.Array, labels: Any = None,
                            optimizer: optax.GradientTransformation | None = None,
                            regularization_losses: Sequence[Any] | None = None) -> EstimatorSpec:
    """The spec for `mode`, from `last_layer` `[batch, hidden]`; call it inside a model_fn
    (it creates the head's variables there, like an inline `nn.Dense`)."""
    last_layer = jnp.asarray(last_layer)
    if last_layer.ndim != 2 or not jnp.issubdtype(last_layer.dtype, jnp.floating):
      raise ValueError(f'{self._describe()}: last_layer must be floating [batch, hidden], got '
                       f'{last_layer.dtype} {last_layer.shape}.')
    layer = self._layer(last_layer.shape[1])
    k = max((self._top_k,) + self._recall_at)
    if mode == ModeKeys.PREDICT:
      predictions = self._predictions(layer.full_softmax(last_layer, None, k, self._chunk))
      return EstimatorSpec(mode, predictions=predictions,
                           export_outputs=self.export_outputs(predictions))
    if labels is None:
      raise ValueError(f'{self._describe()}: labels are required in mode {mode!r}, got None.')
    labels = self._labels(labels, last_layer.shape[0])
    weights = base.example_weights(features, self._weight_column, last_layer, False,
                                   self._describe())
    valid = (labels >= 0) & (labels < self._n_classes)
    safe = jnp.clip(labels, 0, self._n_classes - 1)
    if mode == ModeKeys.TRAIN:
      unweighted = layer.sampled_loss(last_layer, safe, self._num_sampled,
                                      self._remove_accidental_hits, self._rng_stream)[:, None]
      unweighted = base.nan_where_invalid(unweighted, valid)
      states = {MK.LOSS_MEAN: Mean.from_model_output(unweighted, weights)}
      predictions = None
    else:
      full = layer.full_softmax(last_layer, safe, k, self._chunk)
      unweighted = base.nan_where_invalid((full['lse'] - full['label_logit'])[:, None], valid)
      predictions = self._predictions(full)
      states = {MK.LOSS_MEAN: Mean.from_model_output(unweighted, weights),
                MK.ACCURACY: Accuracy.from_model_output(labels, predictions[CLASS_IDS], weights)}
      for r in self._recall_at:
        hit = jnp.any(full['top_i'][:, :r] == labels, axis=-1, keepdims=True)
        states[RECALL_AT_K % r] = Mean.from_model_output(hit.astype(jnp.float32), weights)
    loss = add_regularization(compute_weighted_loss(unweighted, weights, self._loss_reduction),
                              regularization_losses)
    if regularization_losses:
      states[MK.LOSS_REGULARIZATION] = base.batch_scalar_mean(
          regularization_loss(regularization_losses))
    states = {summary_key(key, self._name): v for key, v in states.items()}
    return EstimatorSpec(mode, predictions=predictions, loss=loss, optimizer=optimizer,
                         eval_metrics=states)
