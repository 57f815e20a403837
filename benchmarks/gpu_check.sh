#!/usr/bin/env bash
# GPU check: the throughput benchmarks on an accelerator, one short table. Not part of CI.
#
#   bash benchmarks/gpu_check.sh            # needs jax with CUDA (pip install -e . "jax[cuda12]")
#
# Prints the devices, then train (MLP, linear), eval, and steps_per_loop figures; each
# benchmark compares Estimator against a hand-written loop in the same process.
set -euo pipefail
cd "$(dirname "$0")"
python - <<'PY'
import jax
devices = jax.devices()
print('devices:', devices)
if devices[0].platform != 'gpu':
  raise SystemExit('gpu_check: no GPU visible to JAX (install jax with CUDA support)')
PY
export TF_CPP_MIN_LOG_LEVEL=2
echo '== train throughput (Estimator.train vs hand-written loop)'
python train_throughput.py --rounds 2 2>/dev/null | tail -n +2
echo '== eval throughput (Estimator.evaluate vs hand-written loop)'
python eval_throughput.py --rounds 2 2>/dev/null | tail -n +2
echo '== steps_per_loop'
python scaling.py --no-devices 2>/dev/null
