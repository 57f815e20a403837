"""Command line: `python -m jestimator demo ...` and `python -m jestimator evaluate ...`.

`demo` trains, evaluates and predicts on a small dataset (`jestimator/demos`).
`evaluate` is the evaluator job that runs beside a trainer (`run_evaluator`):
it evaluates each new checkpoint of a model_dir once, with an Estimator and
EvalSpec that a function of the user's module builds, and prints the final
metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys

USAGE = """usage: jestimator demo [penguins|digits] [--max-steps N] [--model-dir DIR] [--seed S]
       jestimator evaluate --model_dir DIR --module PKG.MOD:FN [--stop_at_step N]
                           [--name NAME] [--steps N] [--timeout_secs S] [--poll_secs S]"""

EVALUATE_HELP = """Evaluates every new checkpoint of DIR once, in step order, while a trainer writes
them (je.run_evaluator); prints the last evaluation's metrics.

--module PKG.MOD:FN names a function (imported from the current directory or the
Python path) that is called as FN(model_dir=DIR) and returns (estimator, eval_spec):
a je.Estimator on DIR built like the trainer's (same model_fn, params and config),
and a je.EvalSpec with the evaluation input_fn. --steps and --name replace the
eval_spec's. Without --stop_at_step the job ends when the trainer finishes (its
last checkpoint evaluated), or after --timeout_secs without a new checkpoint."""


def main(argv=None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == 'demo':
    from jestimator import demos

    demos.main(argv[1:])
  elif argv and argv[0] == 'evaluate':
    evaluate(argv[1:])
  else:
    print(USAGE)
    sys.exit(0 if argv and argv[0] in ('-h', '--help') else 2)


def evaluate(argv) -> None:
  """`jestimator evaluate ...`: see EVALUATE_HELP."""
  parser = argparse.ArgumentParser(
      prog='jestimator evaluate', description=EVALUATE_HELP,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model_dir', '--model-dir', required=True, metavar='DIR',
                      help='the model_dir the trainer writes its checkpoints into')
  parser.add_argument('--module', required=True, metavar='PKG.MOD:FN',
                      help='FN(model_dir=DIR) -> (estimator, eval_spec)')
  parser.add_argument('--stop_at_step', '--stop-at-step', type=int, default=None, metavar='N',
                      help='end once a checkpoint of step N or later is evaluated')
  parser.add_argument('--name', default=None,
                      help="the evaluation's name: summaries go to DIR/eval_NAME")
  parser.add_argument('--steps', type=int, default=None, metavar='N',
                      help='batches per evaluation (default: the eval_spec\'s)')
  parser.add_argument('--timeout_secs', '--timeout-secs', type=float, default=None,
                      metavar='S', help='end after S seconds without a new checkpoint')
  parser.add_argument('--poll_secs', '--poll-secs', type=float, default=1.0, metavar='S',
                      help='seconds between looks at DIR (default 1)')
  args = parser.parse_args(argv)
  factory = _import_function(parser, args.module)
  from jestimator.reporting import log_to_stderr
  log_to_stderr()
  from jestimator.lifecycle.evaluator import run_evaluator
  from jestimator.lifecycle.specs import EvalSpec

  made = factory(model_dir=args.model_dir)
  if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[1], EvalSpec)):
    parser.error(f'{args.module}(model_dir=...) must return (estimator, eval_spec), got '
                 f'{type(made).__name__}: {made!r:.200}')
  estimator, spec = made
  if os.path.abspath(estimator.model_dir) != os.path.abspath(args.model_dir):
    parser.error(f'{args.module} built an Estimator on {estimator.model_dir!r}, not on '
                 f'--model_dir {args.model_dir!r}.')
  if args.steps is not None:
    spec = dataclasses.replace(spec, steps=args.steps)
  if args.name is not None:
    spec = dataclasses.replace(spec, name=args.name)
  results = run_evaluator(estimator, spec, args.stop_at_step, args.poll_secs,
                          args.timeout_secs)
  if results is None:
    print(f'No checkpoint of {args.model_dir} was evaluated.', file=sys.stderr)
    sys.exit(1)
  print(f'Final evaluation at global step {int(results["global_step"])}:')
  for key, value in sorted(results.items()):
    print(f'  {key} = {value}')


def _import_function(parser: argparse.ArgumentParser, spec: str):
  """The callable named 'pkg.mod:fn' (the current directory is importable, as with -m)."""
  module_name, _, attr = spec.partition(':')
  if not module_name or not attr:
    parser.error(f"--module must look like 'pkg.module:function', got {spec!r}.")
  if os.getcwd() not in sys.path and '' not in sys.path:
    sys.path.insert(0, os.getcwd())
  module = importlib.import_module(module_name)
  factory = getattr(module, attr, None)
  if not callable(factory):
    parser.error(f'{module_name} has no function {attr!r} (--module {spec}).')
  return factory


if __name__ == '__main__':
  main()
