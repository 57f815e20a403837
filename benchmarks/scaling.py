"""Scaling: steps_per_loop 1/4/16, and 1/2/4/8 (forced CPU) devices, in one run.

Steady steps/s of `Estimator.train` (timed from step 200 to the end, synced at
both ends) on the reference MLP (64-256-256-10, batch 256) and on a
dispatch-bound linear model (64->10, batch 32), with the tf.data input of
`train_throughput.py` and, for the linear model, with pre-made in-memory
batches too: there tf.data's per-batch `next` (~150-300 us on this CPU) is
gone and what K saves, host dispatch, is what is left. Device counts run in child processes (XLA_FLAGS must be
set before jax starts); on a 2-core CPU that part is a correctness run of the
mesh path, not a speed claim.

  python benchmarks/scaling.py [--steps 2000]

Last figures (2-core CPU): MLP K=1/4/16 504/501/539 steps/s; linear, tf.data
2528/5051/3923; linear, in memory 10772/20983/47460 (K=16: 4.41x); forced
devices 1/2/4/8: 530/330/255/158 steps/s (8 virtual devices share 2 cores).
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys


from train_throughput import make_input_fn, with_estimator


def in_memory_input_fn(batch: int, steps: int):
  """Pre-made numpy batches: no tf.data cost, so the host work left is dispatch."""
  x, y = next(iter(make_input_fn(batch * 64)().as_numpy_iterator()))
  batches = [({'x': x['x'][i * batch:(i + 1) * batch]}, y[i * batch:(i + 1) * batch])
             for i in range(64)]
  return lambda: (batches[i % 64] for i in range(steps + 1))


def steps_per_second(hidden, batch, steps, input_fn=None, **config) -> float:
  return with_estimator(input_fn or make_input_fn(batch), hidden, steps, progress_bar=False,
                        **config)


WORKLOADS = (('MLP 64-256-256-10, batch 256', (256, 256), 256, False),
             ('linear 64->10, batch 32, tf.data', (), 32, False),
             ('linear 64->10, batch 32, in memory', (), 32, True))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=2000)
  parser.add_argument('--devices', type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument('--no-devices', action='store_true', help='skip the forced-CPU-devices part')
  args = parser.parse_args()
  logging.getLogger('jestimator').setLevel(logging.WARNING)
  if args.devices:  # child: one device-count measurement
    print(f'{steps_per_second((256, 256), 256, args.steps):.1f}')
    return
  print('steps_per_loop (steps/s, speed-up vs 1):')
  for name, hidden, batch, in_memory in WORKLOADS:
    input_fn = in_memory_input_fn(batch, args.steps) if in_memory else None
    rates = {k: steps_per_second(hidden, batch, args.steps, input_fn, steps_per_loop=k,
                                 log_step_count_steps=None) for k in (1, 4, 16)}
    print(f'  {name:<36}' + ''.join(f'  K={k}: {r:8.1f} ({r / rates[1]:.2f}x)'
                                     for k, r in rates.items()), flush=True)
  if args.no_devices:
    return
  print('devices (MLP, forced CPU devices; correctness of the mesh path on this machine):')
  for n in (1, 2, 4, 8):
    env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}')
    out = subprocess.run([sys.executable, __file__, '--steps', str(args.steps), '--devices',
                          str(n)], env=env, capture_output=True, text=True, check=True)
    print(f'  {n} device(s): {float(out.stdout.split()[-1]):8.1f} steps/s', flush=True)


if __name__ == '__main__':
  main()
