"""Candidate samplers and `sampled_softmax_loss`, as TensorFlow computes them.

tf.nn.sampled_softmax_loss trains a softmax over a huge label space from the
true classes and `num_sampled` negatives drawn once per batch: logits are
`inputs . w_c + b_c - log(expected_count(c))` (the "log Q" correction), and a
negative that equals an example's own label (an accidental hit) gets
`-FLT_MAX` added, so it drops out of that example's softmax. Only the
`[batch, num_true + num_sampled]` logits are ever formed, never
`[batch, num_classes]`.

The samplers draw exactly as TensorFlow's `range_sampler.cc`: with
`unique=True`, candidates are drawn one at a time (with replacement) until
`num_sampled` distinct ones were seen; `num_tries` is how many draws that
took, and the expected count of a class with probability p is
`-expm1(num_tries * log1p(-p))` (`p * num_sampled` when no draw repeated).
Here the sequential draws are made in vectorized chunks inside a
`lax.while_loop`, with the same distribution of candidates and num_tries.

  log_uniform   P(k) = (log(k + 2) - log(k + 1)) / log(range_max + 1)  (Zipf-like)
  uniform       P(k) = 1 / range_max
  learned_unigram  P(k) = counts[k] / sum(counts): counts start at 1 and each
                true class seen adds 1 (tf.random.learned_unigram_candidate_sampler);
                the counts are explicit state here, passed in and returned.

Keys are JAX PRNG keys (`key=`); `seed=` builds one, as TF's op-level seed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)  # compute_accidental_hits' weight is -FLT_MAX


class CandidateSample(NamedTuple):
  """What TF's candidate samplers return (and `sampled_values` is)."""

  sampled_candidates: jax.Array  # int32 [num_sampled]
  true_expected_count: jax.Array  # float32 [batch, num_true]
  sampled_expected_count: jax.Array  # float32 [num_sampled]


def log_uniform_probability(ids: jax.Array, range_max: int) -> jax.Array:
  """P(k) of the log-uniform (Zipfian) sampler, float32, shaped like `ids`."""
  ids = jnp.asarray(ids).astype(jnp.float32)
  return (jnp.log1p(1.0 / (ids + 1.0)) / np.float32(math.log1p(range_max))).astype(jnp.float32)


def uniform_probability(ids: jax.Array, range_max: int) -> jax.Array:
  """P(k) = 1 / range_max, float32, shaped like `ids`."""
  return jnp.full(jnp.shape(ids), np.float32(1.0 / range_max), jnp.float32)


def unigram_probability(ids: jax.Array, counts: jax.Array) -> jax.Array:
  """P(k) = counts[k] / sum(counts), float32, shaped like `ids`."""
  counts = jnp.asarray(counts, jnp.float32)
  return counts[jnp.asarray(ids)] / jnp.sum(counts)


def expected_count(probability: jax.Array, num_sampled: int, num_tries: jax.Array) -> jax.Array:
  """TF's ExpectedCountHelper: the expected count of a class in one sample of `num_sampled`.

  `p * num_sampled` when `num_tries == num_sampled` (no draw repeated; always
  so with unique=False), else `1 - (1 - p)^num_tries` computed stably.
  """
  p = jnp.asarray(probability, jnp.float32)
  tries = jnp.asarray(num_tries).astype(jnp.float32)
  unique = -jnp.expm1(tries * jnp.log1p(-p))
  return jnp.where(jnp.asarray(num_tries) == num_sampled, p * np.float32(num_sampled), unique)


def _draw_log_uniform(key: jax.Array, n: int, range_max: int) -> jax.Array:
  """`floor(exp(u * log(range_max + 1))) - 1` for uniform u, as LogUniformSampler::Sample."""
  u = jax.random.uniform(key, (n,), jnp.float32)
  value = jnp.floor(jnp.exp(u * np.float32(math.log1p(range_max)))).astype(jnp.int32) - 1
  return jnp.clip(value, 0, range_max - 1)


def _draw_uniform(key: jax.Array, n: int, range_max: int) -> jax.Array:
  return jax.random.randint(key, (n,), 0, range_max, jnp.int32)


def _draw_unigram(key: jax.Array, n: int, counts: jax.Array) -> jax.Array:
  """Inverse-CDF draws from `counts` (O(range_max) memory, no [n, range_max] Gumbel noise)."""
  cdf = jnp.cumsum(jnp.asarray(counts, jnp.float32))
  u = jax.random.uniform(key, (n,), jnp.float32) * cdf[-1]
  return jnp.clip(jnp.searchsorted(cdf, u, side='right'), 0, cdf.shape[0] - 1).astype(jnp.int32)


def _first_occurrences(values: jax.Array) -> jax.Array:
  """bool [n]: whether `values[i]` does not occur in `values[:i]`."""
  order = jnp.argsort(values, stable=True)
  ordered = values[order]
  first = jnp.concatenate([jnp.ones((1,), bool), ordered[1:] != ordered[:-1]])
  return jnp.zeros_like(first).at[order].set(first)


def _unique_draws(key: jax.Array, draw, num_sampled: int, range_max: int):
  """(`num_sampled` distinct ids in order of first draw, num_tries int32): TF's unique loop.

  Each iteration draws a chunk with replacement and keeps, in draw order, the
  values not seen before until `num_sampled` are kept; num_tries counts the
  draws up to and including the last kept one.
  """
  chunk = max(2 * num_sampled, 16)

  def body(state):
    key, seen, samples, count, tries = state
    key, sub = jax.random.split(key)
    values = draw(sub, chunk)
    fresh = ~seen[values] & _first_occurrences(values)
    rank = count + jnp.cumsum(fresh.astype(jnp.int32))  # kept so far, including position i
    keep = fresh & (rank <= num_sampled)
    samples = samples.at[jnp.where(keep, rank - 1, num_sampled)].set(values, mode='drop')
    seen = seen.at[jnp.where(keep, values, range_max)].set(True, mode='drop')
    done = rank[-1] >= num_sampled
    last = jnp.argmax(keep & (rank == num_sampled)).astype(jnp.int32)
    tries = tries + jnp.where(done, last + 1, chunk)
    return key, seen, samples, jnp.minimum(rank[-1], num_sampled), tries

  state = (key, jnp.zeros((range_max,), bool), jnp.zeros((num_sampled,), jnp.int32),
           jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
  _, _, samples, _, tries = jax.lax.while_loop(lambda s: s[3] < num_sampled, body, state)
  return samples, tries


def _check_sampler_args(true_classes, num_true: int, num_sampled: int, unique: bool,
                        range_max: int, sampler: str) -> jax.Array:
  true_classes = jnp.asarray(true_classes)
  if true_classes.ndim != 2 or true_classes.shape[1] != num_true:
    raise ValueError(f'{sampler}: true_classes must be [batch_size, num_true={num_true}], '
                     f'got shape {true_classes.shape}.')
  if not jnp.issubdtype(true_classes.dtype, jnp.integer):
    raise ValueError(f'{sampler}: true_classes must be integer class ids, got '
                     f'{true_classes.dtype}.')
  if num_sampled < 1 or (unique and num_sampled > range_max):
    raise ValueError(f'{sampler}: num_sampled must be in [1, range_max = {range_max}] with '
                     f'unique=True (>= 1 otherwise), got {num_sampled}.')
  return true_classes


def _sample(key, true_classes, num_sampled: int, unique: bool, range_max: int, draw,
            probability) -> CandidateSample:
  key = _as_key(key, None, 'candidate sampler')
  if unique:
    sampled, tries = _unique_draws(key, draw, num_sampled, range_max)
  else:
    sampled, tries = draw(key, num_sampled), jnp.int32(num_sampled)
  return CandidateSample(
      sampled_candidates=sampled,
      true_expected_count=expected_count(probability(true_classes), num_sampled, tries),
      sampled_expected_count=expected_count(probability(sampled), num_sampled, tries))


def log_uniform_candidate_sampler(true_classes, num_true: int, num_sampled: int, unique: bool,
                                  range_max: int, *, key) -> CandidateSample:
  """tf.random.log_uniform_candidate_sampler with a JAX `key`; true_classes [batch, num_true]."""
  true_classes = _check_sampler_args(true_classes, num_true, num_sampled, unique, range_max,
                                     'log_uniform_candidate_sampler')
  return _sample(key, true_classes, num_sampled, unique, range_max,
                 lambda k, n: _draw_log_uniform(k, n, range_max),
                 lambda ids: log_uniform_probability(ids, range_max))


def uniform_candidate_sampler(true_classes, num_true: int, num_sampled: int, unique: bool,
                              range_max: int, *, key) -> CandidateSample:
  """tf.random.uniform_candidate_sampler with a JAX `key`; true_classes [batch, num_true]."""
  true_classes = _check_sampler_args(true_classes, num_true, num_sampled, unique, range_max,
                                     'uniform_candidate_sampler')
  return _sample(key, true_classes, num_sampled, unique, range_max,
                 lambda k, n: _draw_uniform(k, n, range_max),
                 lambda ids: uniform_probability(ids, range_max))


def learned_unigram_candidate_sampler(true_classes, num_true: int, num_sampled: int,
                                      unique: bool, range_max: int, *, key, counts):
  """tf.random.learned_unigram_candidate_sampler with its state made explicit.

  Args:
    counts: float32 `[range_max]` class counts (start with ones); sampling uses
      them as they are, then (as TF) each true class adds 1.

  Returns:
    `(CandidateSample, new_counts)`.
  """
  true_classes = _check_sampler_args(true_classes, num_true, num_sampled, unique, range_max,
                                     'learned_unigram_candidate_sampler')
  counts = jnp.asarray(counts, jnp.float32)
  if counts.shape != (range_max,):
    raise ValueError(f'learned_unigram_candidate_sampler: counts must be [range_max] = '
                     f'({range_max},), got {counts.shape}.')
  sample = _sample(key, true_classes, num_sampled, unique, range_max,
                   lambda k, n: _draw_unigram(k, n, counts),
                   lambda ids: unigram_probability(ids, counts))
  safe = jnp.clip(true_classes.reshape(-1), 0, range_max - 1)
  return sample, counts.at[safe].add(1.0)


def _as_key(key, seed, what: str) -> jax.Array:
  if key is None and seed is None:
    raise ValueError(f'{what}: pass key= (a jax.random key) or seed= to draw candidates; '
                     'JAX has no global random state.')
  return jax.random.PRNGKey(seed) if key is None else key


def compute_sampled_logits(weights, biases, labels, inputs, num_sampled: int, num_classes: int,
                           num_true: int = 1, sampled_values=None,
                           remove_accidental_hits: bool = True, subtract_log_q: bool = True,
                           seed: int | None = None, *, key=None):
  """TF's `_compute_sampled_logits`: (logits [batch, num_true + num_sampled], soft labels).

  Rows of `weights` `[num_classes, dim]` and `biases` `[num_classes]` are
  gathered for the true and sampled ids only; see the module docstring.
  """
  weights, biases, inputs = jnp.asarray(weights), jnp.asarray(biases), jnp.asarray(inputs)
  labels = jnp.asarray(labels)
  if labels.ndim == 1 and num_true == 1:
    labels = labels[:, None]
  if weights.ndim != 2 or weights.shape[0] != num_classes:
    raise ValueError(f'sampled_softmax_loss: weights must be [num_classes={num_classes}, dim], '
                     f'got {weights.shape}.')
  if biases.shape != (num_classes,):
    raise ValueError(f'sampled_softmax_loss: biases must be [num_classes] = ({num_classes},), '
                     f'got {biases.shape}.')
  if inputs.ndim != 2 or inputs.shape[1] != weights.shape[1]:
    raise ValueError(f'sampled_softmax_loss: inputs must be [batch, dim={weights.shape[1]}], '
                     f'got {inputs.shape}.')
  if labels.shape != (inputs.shape[0], num_true):
    raise ValueError(f'sampled_softmax_loss: labels must be [batch, num_true] = '
                     f'{(inputs.shape[0], num_true)}, got {labels.shape}.')
  if sampled_values is None:
    sampled_values = log_uniform_candidate_sampler(
        labels, num_true, num_sampled, True, num_classes,
        key=_as_key(key, seed, 'sampled_softmax_loss'))
  sampled, true_count, sampled_count = (jax.lax.stop_gradient(jnp.asarray(v))
                                        for v in sampled_values)
  if sampled.shape != (num_sampled,):
    raise ValueError(f'sampled_softmax_loss: sampled_candidates must be [num_sampled] = '
                     f'({num_sampled},), got {sampled.shape}.')
  labels = labels.astype(jnp.int32)
  sampled = sampled.astype(jnp.int32)
  # float32 at least: -FLT_MAX is -inf in bfloat16, and 0 * log_softmax(-inf) is NaN
  dtype = jnp.promote_types(inputs.dtype, jnp.float32)
  inputs = inputs.astype(dtype)
  true_w = weights[labels].astype(dtype)  # [batch, num_true, dim]
  true_logits = jnp.einsum('bd,btd->bt', inputs, true_w) + biases[labels].astype(dtype)
  sampled_logits = inputs @ weights[sampled].astype(dtype).T + biases[sampled].astype(dtype)
  if remove_accidental_hits:
    hits = jnp.any(labels[:, :, None] == sampled[None, None, :], axis=1)  # [batch, num_sampled]
    sampled_logits = sampled_logits + jnp.where(hits, -FLT_MAX, 0.0).astype(dtype)
  if subtract_log_q:
    true_logits = true_logits - jnp.log(true_count).astype(dtype)
    sampled_logits = sampled_logits - jnp.log(sampled_count).astype(dtype)
  logits = jnp.concatenate([true_logits, sampled_logits], axis=1)
  soft_labels = jnp.concatenate([jnp.full_like(true_logits, 1.0 / num_true),
                                 jnp.zeros_like(sampled_logits)], axis=1)
  return logits, soft_labels


def sampled_softmax_loss(weights, biases, labels, inputs, num_sampled: int, num_classes: int,
                         num_true: int = 1, sampled_values=None,
                         remove_accidental_hits: bool = True, seed: int | None = None, *,
                         key=None) -> jax.Array:
  """tf.nn.sampled_softmax_loss: the per-example sampled softmax loss `[batch]`.

  Args (TF's):
    weights: `[num_classes, dim]` class embeddings (one array; shard it with a
      sharding rather than TF's list of partitions).
    biases: `[num_classes]`.
    labels: int `[batch, num_true]` (or `[batch]` when num_true is 1).
    inputs: `[batch, dim]`, e.g. the last hidden layer.
    sampled_values: `(sampled_candidates, true_expected_count,
      sampled_expected_count)`; None draws them with the log-uniform sampler
      (unique=True) from `key` (or `seed`).
    remove_accidental_hits: add -FLT_MAX to a sampled logit equal to a label.

  The loss is softmax cross entropy against labels `1/num_true` on the true
  logits, 0 on the sampled ones. Train with it only; evaluate with the full softmax.
  """
  if isinstance(weights, (list, tuple)):
    raise TypeError('sampled_softmax_loss: weights must be one [num_classes, dim] array; shard '
                    'it with partition rules instead of passing a list of partitions.')
  logits, soft_labels = compute_sampled_logits(
      weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampled_values,
      remove_accidental_hits, True, seed, key=key)
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.sum(soft_labels.astype(jnp.float32) * log_probs, axis=-1)
