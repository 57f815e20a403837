"""Command line: `python -m jestimator demo [penguins|digits] [--max-steps N] [--model-dir DIR]`."""

from __future__ import annotations

import sys


def main(argv=None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ('-h', '--help') or argv[0] != 'demo':
    print('usage: jestimator demo [penguins|digits] [--max-steps N] [--model-dir DIR] [--seed S]')
    sys.exit(0 if argv and argv[0] in ('-h', '--help') else 2)
  from jestimator import demos

  demos.main(argv[1:])


if __name__ == '__main__':
  main()
