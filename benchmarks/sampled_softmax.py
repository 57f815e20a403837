"""Sampled vs full softmax over 200,000 classes: train steps/s, recall@10, memory.

One process, interleaved rounds (sampled, full, sampled, full, ...), each a
`train(steps=...)` call of the same model: 64 features -> Dense(128) relu ->
200,000 classes, batch 256, Adam 1e-2. The heads:

  sampled   SampledSoftmaxHead(200_000, num_sampled=1024) (log-uniform sampler)
            owns the [200000, 128] output embedding; evaluates in 8,192-class blocks
  full      nn.Dense(200_000) + MultiClassHead (softmax over every class)

Synthetic task: labels drawn log-uniformly (Zipf-like, class 0 the most
frequent), features = a fixed random 64-d code of the label + N(0, 0.5^2)
noise. Steady steps/s per call from its 2nd step to its last (synced at both
ends; the first call of each also compiles and is not counted). Then recall@10
of both on the same 4,096 held-out examples after the same number of steps, and
memory: XLA's compiled memory analysis of one train step and one eval step
(`temp_size_in_bytes`, the scratch an executable needs beyond its arguments
and outputs; the arguments, 200,000 x 128 weights + Adam moments, are about the
same for both), the same model_fn applied through jestimator's ModelFnModule.

  python benchmarks/sampled_softmax.py [--rounds 3] [--steps 100] [--quick]

Last figures (2-core CPU shared with other jobs, jax 0.10.2, --rounds 3 --steps 100, 8.5 min):
  train steps/s       sampled 10.39, full 0.73: 12.4x (median of rounds 12.4, 11.3, 16.5;
                      an earlier, busier run: 9.5x, 4.7 vs 0.48 steps/s)
  after 302 steps     recall@10 sampled 0.619, full 0.664 (accuracy 0.596 / 0.638; full-softmax
                      loss 6.11 / 5.04). The sampled head learns more slowly per step: after
                      122 steps at Adam 5e-3 it was 0.497 vs 0.588.
  scratch memory      train step 103 MiB vs 489 MiB; eval step 12 MiB vs 391 MiB (both hold the
                      same 295 MiB of arguments: weights and Adam moments). Both train steps
                      still update the whole [200000, 128] embedding (optax's Adam is dense),
                      which is most of the sampled step's time.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tensorflow as tf

import jestimator as je
from jestimator.training.transform import ModelFnModule

N_CLASSES, HIDDEN, FEATURES, BATCH = 200_000, 128, 64, 256
NUM_SAMPLED = 1024


def make_data(n: int, seed: int):
  """Log-uniform labels and noisy fixed codes of them as features."""
  rng = np.random.RandomState(seed)
  u = rng.rand(n)
  y = np.clip(np.floor(np.exp(u * np.log1p(N_CLASSES))).astype(np.int64) - 1, 0, N_CLASSES - 1)
  codes = np.random.RandomState(1234).randn(N_CLASSES, FEATURES).astype(np.float32)
  x = codes[y] + 0.5 * rng.randn(n, FEATURES).astype(np.float32)
  return x, y.astype(np.int32)


def train_input_fn():
  x, y = make_data(65536, seed=0)
  ds = tf.data.Dataset.from_tensor_slices(({'x': x}, y)).shuffle(65536, seed=0).repeat()
  return ds.batch(BATCH, drop_remainder=True).prefetch(2)


def model_fn(features, labels, mode, params):
  h = nn.relu(nn.Dense(HIDDEN, name='hidden')(features['x']))
  optimizer = optax.adam(1e-2)
  if params['head'] == 'sampled':
    head = je.heads.SampledSoftmaxHead(N_CLASSES, NUM_SAMPLED, top_k=10, recall_at=(10,),
                                       eval_chunk_size=8192)
    return head.create_estimator_spec(features, mode, h, labels, optimizer=optimizer)
  logits = nn.Dense(N_CLASSES, name='logits')(h)
  spec = je.heads.MultiClassHead(N_CLASSES).create_estimator_spec(features, mode, logits, labels,
                                                                  optimizer=optimizer)
  if mode == je.ModeKeys.EVAL:
    top = jax.lax.top_k(logits, 10)[1]
    hit = jnp.any(top == labels.reshape(-1, 1), axis=-1).astype(jnp.float32)
    spec.eval_metrics['recall_at_10'] = je.metrics.Mean.from_model_output(hit)
  return spec


class _Timer(je.hooks.Hook):
  """Steps/s of one train() call, from its first hook call to its last step."""

  def begin(self, ctx):
    self.t0 = self.s0 = None

  def after_step(self, ctx):
    if self.t0 is None:
      jax.block_until_ready(ctx.state.step)
      self.t0, self.s0 = time.perf_counter(), ctx.step
    self.s1 = ctx.step

  def end(self, ctx):
    jax.block_until_ready(ctx.state.step)
    self.rate = (self.s1 - self.s0) / (time.perf_counter() - self.t0)


def memory(head: str) -> dict[str, int]:
  """Scratch bytes (`temp_size_in_bytes`) of one compiled train step and one eval step."""
  module = ModelFnModule(model_fn, hparams={'head': head})
  f = {'x': jax.ShapeDtypeStruct((BATCH, FEATURES), jnp.float32)}
  l = jax.ShapeDtypeStruct((BATCH,), jnp.int32)
  key = jax.random.PRNGKey(0)
  init = lambda f, l: module.init({'params': key, 'dropout': key}, f, l, je.ModeKeys.TRAIN)
  params = jax.eval_shape(init, f, l)['params']
  tx = optax.adam(1e-2)
  opt_state = jax.eval_shape(tx.init, params)

  def train_step(params, opt_state, f, l):
    def loss_fn(p):
      return module.apply({'params': p}, f, l, je.ModeKeys.TRAIN, rngs={'dropout': key}).loss
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def eval_step(params, f, l):
    spec = module.apply({'params': params}, f, l, je.ModeKeys.EVAL)
    return spec.loss, spec.eval_metrics

  train = jax.jit(train_step, donate_argnums=(0, 1)).lower(params, opt_state, f, l).compile()
  evaluate = jax.jit(eval_step).lower(params, f, l).compile()
  t, e = train.memory_analysis(), evaluate.memory_analysis()
  return {'train_temp': t.temp_size_in_bytes, 'train_args': t.argument_size_in_bytes,
          'eval_temp': e.temp_size_in_bytes}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=100, help='train steps per call and head')
  parser.add_argument('--quick', action='store_true', help='2 rounds of 10 steps')
  args = parser.parse_args()
  if args.quick:
    args.rounds, args.steps = 2, 10
  logging.getLogger('jestimator').setLevel(logging.WARNING)
  print(f'jax {jax.__version__}, {N_CLASSES} classes, hidden {HIDDEN}, batch {BATCH}, '
        f'num_sampled {NUM_SAMPLED}, rounds {args.rounds} x {args.steps} steps', flush=True)
  x_eval, y_eval = make_data(4096, seed=1)
  eval_fn = je.inputs.numpy_input_fn({'x': x_eval}, y_eval, batch_size=BATCH, shuffle=False)
  config = je.RunConfig(seed=0, progress_bar=False, keep_checkpoint_max=1,
                        log_step_count_steps=None)
  with tempfile.TemporaryDirectory() as root:
    ests = {h: je.Estimator(model_fn, f'{root}/{h}', config, {'head': h})
            for h in ('sampled', 'full')}
    for est in ests.values():  # compiles; not timed
      est.train(train_input_fn, steps=2)
    rates = {h: [] for h in ests}
    for _ in range(args.rounds):
      for h, est in ests.items():
        timer = _Timer()
        est.train(train_input_fn, steps=args.steps, hooks=[timer])
        rates[h].append(timer.rate)
      print('  round: ' + ', '.join(f'{h} {r[-1]:.2f} steps/s' for h, r in rates.items()),
            flush=True)
    results = {h: est.evaluate(eval_fn) for h, est in ests.items()}
  ratio = np.median(np.array(rates['sampled']) / np.array(rates['full']))
  print(f'train steps/s: sampled {np.median(rates["sampled"]):.2f}, full '
        f'{np.median(rates["full"]):.2f}; sampled / full {ratio:.1f}x (median of rounds)')
  steps = results['sampled']['global_step']
  for key in ('recall_at_10', 'accuracy', 'average_loss'):
    print(f'{key} after {steps} steps: sampled {results["sampled"][key]:.3f}, full '
          f'{results["full"][key]:.3f}')
  for h in ests:
    m = memory(h)
    print(f'memory {h}: train step scratch {m["train_temp"] / 2**20:.0f} MiB, eval step scratch '
          f'{m["eval_temp"] / 2**20:.0f} MiB (arguments {m["train_args"] / 2**20:.0f} MiB)',
          flush=True)


if __name__ == '__main__':
  main()
