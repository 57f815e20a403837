"""Demos, run by `python -m jestimator demo [penguins|digits]`.

penguins (default): a canned wide & deep classifier over feature columns on a
  table with string columns (issue: feature columns and canned estimators).
digits: a custom model_fn with inline Flax layers (the core Estimator API).
"""

from __future__ import annotations

import argparse


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='jestimator demo', description=__doc__)
  parser.add_argument('dataset', nargs='?', default='penguins', choices=['penguins', 'digits'])
  parser.add_argument('--model-dir', default=None)
  parser.add_argument('--max-steps', type=int, default=None)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  from jestimator.reporting import log_to_stderr  # pylint: disable=import-outside-toplevel
  log_to_stderr()
  if args.dataset == 'digits':
    from jestimator.demos import digits
    digits.run(args.model_dir, args.max_steps or 1500, args.seed)
  else:
    from jestimator.demos import penguins
    penguins.run(args.model_dir, args.max_steps or 600, args.seed)
