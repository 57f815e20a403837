"""Training throughput: Estimator.train vs a hand-written Flax+optax jit loop.

Same workload through both, in one process: an MLP 64-256-256-10 (ReLU), batch
256, Adam 1e-3, a tf.data pipeline over 65,536 x 64 normal features with labels
= argmax of a fixed random projection; 2,000 steps. Steady-state steps/s is
timed from step 200 to the last step (the device is synced at both ends).
Also a dispatch-bound case: a linear model 64->10 at batch 32.
Rounds alternate (hand, estimator, hand, ...); tf.data on 2 cores is noisy, so
the best round of each and the median of the per-round ratios are reported.

  python benchmarks/train_throughput.py [--steps 2000] [--rounds 3]

Last figures (2-core CPU, jax 0.10.2; two runs of 4 and 3 rounds):
  MLP 64-256-256-10, batch 256:   hand 459 / 457, estimator 497 / 447 steps/s:
                                  best/best 1.08 / 0.98, median of rounds 1.05 / 0.99
  linear 64->10, batch 32:        hand 3037, estimator 3552 steps/s: best/best 1.17 (tf.data's
                                  next() dominates both loops here; rounds vary 2x)
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import flax.linen as nn
import jax
import numpy as np
import optax
import tensorflow as tf

import jestimator as je

WARMUP = 200


def make_input_fn(batch_size: int, n: int = 65536, d: int = 64, seed: int = 0):
  rng = np.random.RandomState(seed)
  x = rng.randn(n, d).astype(np.float32)
  y = np.argmax(x @ rng.randn(d, 10).astype(np.float32), axis=1).astype(np.int32)

  def input_fn():
    ds = tf.data.Dataset.from_tensor_slices(({'x': x}, y)).shuffle(4096, seed=seed)
    ds = ds.repeat().batch(batch_size, drop_remainder=True).prefetch(2)
    options = tf.data.Options()  # one host thread for tf.data: steadier figures on 2 cores
    options.threading.private_threadpool_size = 1
    options.autotune.enabled = False
    return ds.with_options(options)

  return input_fn


class MLP(nn.Module):
  hidden: tuple

  @nn.compact
  def __call__(self, x):
    for units in self.hidden:
      x = nn.relu(nn.Dense(units)(x))
    return nn.Dense(10)(x)


def hand_written(input_fn, hidden, steps: int) -> float:
  """The zero-overhead baseline: jit(train_step) with donation over as_numpy_iterator."""
  model, tx = MLP(hidden), optax.adam(1e-3)
  it = input_fn().as_numpy_iterator()
  features, labels = next(it)
  params = model.init(jax.random.PRNGKey(0), features['x'])['params']
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, x, y):
    def loss_fn(p):
      logits = model.apply({'params': p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  train_step = jax.jit(train_step, donate_argnums=(0, 1))
  for step in range(1, steps + 1):
    params, opt_state, loss = train_step(params, opt_state, features['x'], labels)
    if step == WARMUP:
      jax.block_until_ready(loss)
      start = time.perf_counter()
    features, labels = next(it)
  jax.block_until_ready(loss)
  return (steps - WARMUP) / (time.perf_counter() - start)


class _Timer(je.hooks.Hook):
  """Times steps from the first hook call at or past WARMUP to the last step."""

  def __init__(self, steps):
    self.steps, self.t0, self.t1, self.s0 = steps, None, None, None

  def after_step(self, ctx):
    if self.t0 is None and ctx.step >= WARMUP:
      jax.block_until_ready(ctx.state.step)
      self.t0, self.s0 = time.perf_counter(), ctx.step
    elif ctx.step >= self.steps:
      jax.block_until_ready(ctx.state.step)
      self.t1 = time.perf_counter()

  @property
  def rate(self) -> float:
    return (self.steps - self.s0) / (self.t1 - self.t0)


def with_estimator(input_fn, hidden, steps: int, **config) -> float:
  """Steady steps/s of `Estimator.train` on the MLP (RunConfig defaults unless overridden)."""
  def model_fn(features, labels, mode):
    logits = MLP(hidden, name='mlp')(features['x'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return je.EstimatorSpec(mode, loss=loss, predictions=logits, optimizer=optax.adam(1e-3))

  timer = _Timer(steps)
  with tempfile.TemporaryDirectory() as model_dir:
    est = je.Estimator(model_fn, model_dir, je.RunConfig(seed=0, **config))
    est.train(input_fn, max_steps=steps, hooks=[timer])
  return timer.rate


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--rounds', type=int, default=3)
  args = parser.parse_args()
  logging.getLogger('jestimator').setLevel(logging.WARNING)
  print(f'jax {jax.__version__}, devices {jax.devices()}, steps {args.steps}')
  print(f'{"workload":<36}{"hand steps/s":>13}{"estimator steps/s":>18}{"best/best":>10}'
        f'{"median ratio":>13}')
  for name, hidden, batch in (('MLP 64-256-256-10, batch 256', (256, 256), 256),
                              ('linear 64->10, batch 32 (dispatch)', (), 32)):
    input_fn = make_input_fn(batch)
    hand, est = [], []
    for _ in range(args.rounds):
      hand.append(hand_written(input_fn, hidden, args.steps))
      est.append(with_estimator(input_fn, hidden, args.steps))
    ratio = float(np.median(np.array(est) / np.array(hand)))
    print(f'{name:<36}{max(hand):>13.1f}{max(est):>18.1f}{max(est) / max(hand):>10.3f}'
          f'{ratio:>13.3f}', flush=True)
    print(f'{"":<4}rounds: hand {[round(h) for h in hand]}, estimator {[round(e) for e in est]}')


if __name__ == '__main__':
  main()
