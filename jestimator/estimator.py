"""`Estimator`: the host loop around the compiled steps (train, evaluate, predict).

No math lives here. Data flows: input_fn -> `InputPipeline` (numpy batches,
checked against the model's signature) -> `Runner.feed` (global arrays on the
mesh) -> jitted step -> back here for logs, hooks, progress and checkpoints.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np

from jestimator.checkpoint import CheckpointStore
from jestimator.checkpoint_check import check_restorable
from jestimator.compile_cache import enable_compilation_cache
from jestimator.config import RunConfig
from jestimator.distribute.mesh import mesh_from_config
from jestimator.distribute.multiprocess import largest_over_processes
from jestimator.feature_column.transform import FeatureTransform
from jestimator.hooks.base import Hook
from jestimator.hooks.hook_set import check_hooks, check_listeners
from jestimator.inference_loop import run_evaluation, run_prediction, unbatch
from jestimator.inputs.input_context import InputContext
from jestimator.inputs.host_transform import HostTransform
from jestimator.inputs.input_fn import call_input_fn
from jestimator.inputs.padding import batch_size_of, pad_batch
from jestimator.inputs.pipeline import InputPipeline
from jestimator.inputs.sources import apply_transforms, normalize
from jestimator.inputs.signature import Signature
from jestimator.model_dir_lock import hold_model_dir
from jestimator.model_dir_view import ModelDirView
from jestimator.lifecycle.evaluator import clear_training_finished, mark_training_finished
from jestimator.lifecycle.recording import default_train_hooks, record_evaluation
from jestimator.reporting import logger
from jestimator.spec import ModeKeys
from jestimator.train_loop import check_train_args, run_train_loop
from jestimator.training.precision import PolicyModule, get_policy
from jestimator.training.runner import Runner
from jestimator.training.transform import ModelFnModule, model_fn_args
from jestimator.warm_start import warm_start, warm_start_settings

@dataclasses.dataclass
class _Live:
  """What a finished train() call leaves in memory: equal to its final checkpoint."""
  step: int
  state: Any
  pipeline: InputPipeline
  signature: Signature


class Estimator(ModelDirView):
  """Trains, evaluates and predicts with a pure `model_fn` (tf.estimator's API).

  Args:
    model_fn: `model_fn(features, labels, mode, params, config) -> EstimatorSpec`
      (only `features` is required; arguments are matched by name).
    model_dir: checkpoint directory; default `config.model_dir`, else a temp dir.
    config: a `RunConfig`.
    params: hyperparameters passed to model_fn and input_fn.
    input_transforms: `HostTransform`s applied, in order, to every input_fn's
      batches inside its tf.data pipeline (strings -> ids, feature columns'
      host halves), and to predictions on the way out (`postprocess`).
    feature_columns: shorthand for a first `feature_column.FeatureTransform`
      of these columns (with `sparse_lengths` for variable-length inputs).
    warm_start_from: a model_dir, `<model_dir>/<step>` or `WarmStartSettings`:
      initial variables, used only while model_dir has no checkpoint.
  """

  def __init__(self, model_fn: Callable, model_dir: str | None = None,
               config: RunConfig | None = None, params: dict | None = None,
               input_transforms: Sequence[HostTransform] = (),
               feature_columns: Sequence[Any] | None = None,
               sparse_lengths: dict[str, int] | None = None,
               warm_start_from: Any = None):
    model_fn_args(model_fn)
    self._warm_start = warm_start_settings(warm_start_from)
    if feature_columns:
      input_transforms = (FeatureTransform(feature_columns, sparse_lengths), *input_transforms)
    self._transforms = tuple(input_transforms)
    config = RunConfig.of(config)
    if model_dir and config.model_dir and os.path.abspath(model_dir) != os.path.abspath(
        config.model_dir):
      raise ValueError(f'model_dir {model_dir!r} differs from config.model_dir '
                       f'{config.model_dir!r}.')
    model_dir = model_dir or config.model_dir
    if model_dir is None:
      if jax.process_count() > 1:
        raise ValueError('With several processes, give a model_dir that every process shares '
                         '(checkpoints are written collectively).')
      model_dir = tempfile.mkdtemp(prefix='jestimator_')
      logger.warning('Using temporary folder as model directory: %s', model_dir)
    self._config = config.replace(model_dir=os.fspath(model_dir))
    self._params = copy.deepcopy(params or {})
    self._model_fn = model_fn
    self._mesh = mesh_from_config(self._config)
    module = ModelFnModule(model_fn, hparams=self._params, config=self._config)
    policy = get_policy(self._config.precision)
    if policy != get_policy('float32'):
      module = PolicyModule(module, policy)
    enable_compilation_cache(self._config.compilation_cache_dir)
    self._runner = Runner(module, self._mesh, self._config.data_axis, self._config.rng_streams,
                          self._config.gradient_accumulation_steps, self._config.partition_rules,
                          self._config.runner, debug=self._config.debug)
    self._optimizer = None
    self._train_metric_shapes = None
    self._live: _Live | None = None  # the state and input the last train() ended with
    self._mode_hooks: dict[str, tuple] = {}  # the model_fn's hooks per mode

  # -- properties -----------------------------------------------------------

  @property
  def config(self) -> RunConfig:
    return self._config

  @property
  def params(self) -> dict:
    return copy.deepcopy(self._params)

  @property
  def mesh(self) -> jax.sharding.Mesh:
    return self._mesh

  def __repr__(self) -> str:
    name = getattr(self._model_fn, '__name__', repr(self._model_fn))
    step = self._checkpoints().latest_step()
    return (f'Estimator(model_fn={name}, model_dir={self.model_dir!r}, global_step={step}, '
            f'mesh={dict(self._mesh.shape)})')

  # -- input ------------------------------------------------------------------

  def _pipeline(self, input_fn: Callable, mode: str, stack: int = 1) -> InputPipeline:
    context = InputContext(num_input_pipelines=jax.process_count(),
                           input_pipeline_id=jax.process_index(),
                           num_replicas_in_sync=self._runner.feed.data_size)
    source = normalize(call_input_fn(input_fn, mode=mode, params=self.params,
                                     config=self._config, input_context=context), mode)
    if self._transforms:
      source = apply_transforms(source, self._transforms, mode)
    return InputPipeline(source, mode, input_fn, stack)

  @staticmethod
  def _first(pipeline: InputPipeline, mode: str) -> tuple[Any, Any]:
    """The first batch, still in the pipeline (peeked)."""
    first = pipeline.peek()
    if first is None:
      raise ValueError(f'input_fn returned an empty dataset (mode={mode!r}): no batch to '
                       'run on.')
    if first[1] is None and mode != ModeKeys.PREDICT:
      raise ValueError(f'labels are None in mode {mode!r}: the input_fn must return '
                       '(features, labels).')
    return first

  # -- train ------------------------------------------------------------------

  def train(self, input_fn: Callable, hooks: Sequence[Hook] | None = None,
            steps: int | None = None, max_steps: int | None = None,
            saving_listeners: Sequence[Any] | None = None,
            resume_input: bool = True) -> 'Estimator':
    """Trains until `steps` more steps, global step `max_steps`, or the input ends.

    Resumes from the newest checkpoint in model_dir. The input resumes too
    when it is the same input (same fingerprint), so N + N steps in two calls
    equal 2N steps in one; another input_fn starts at its first batch, as
    does any input with `resume_input=False`. When this Estimator's last
    call ended at the newest checkpoint, the state and the live input simply
    continue (nothing is restored). A newest checkpoint that cannot be read
    is skipped with a warning (and moved aside): training resumes from the
    previous one. Only one train() at a time may write into a model_dir.
    Hooks: `hooks`, the model_fn's `training_hooks`, and a `SummarySaverHook`
    every `save_summary_steps`; `saving_listeners` around every save.
    """
    hooks = check_train_args(steps, max_steps, hooks)
    listeners = check_listeners(saving_listeners)
    with hold_model_dir(self.model_dir):  # writable, and no other live trainer
      return self._train(input_fn, hooks, listeners, steps, max_steps, resume_input)

  def _train(self, input_fn, hooks, listeners, steps, max_steps, resume_input) -> 'Estimator':
    start = self._checkpoints().latest_step() or 0
    if max_steps is not None and start >= max_steps:
      logger.info('Skipping training since max_steps has already saved (global step %d).', start)
      return self
    clear_training_finished(self.model_dir)  # for an evaluator following model_dir
    self._pinned = None
    live, self._live = self._live, None  # donated below; set again only on success
    state, pipeline, signature, start = self._start_training(input_fn, start, resume_input,
                                                             live)
    last = start + steps if steps is not None else max_steps
    hooks = [*hooks, *self._mode_hooks[ModeKeys.TRAIN][0], *default_train_hooks(self._config)]
    state, step, finished = run_train_loop(
        self, self._runner, self._checkpoints(), self._config, self._optimizer,
        self._train_metric_shapes, state, pipeline, signature, start, last, hooks, listeners)
    self._live = _Live(step, state, pipeline, signature)
    if finished:
      mark_training_finished(self.model_dir, step)
    return self

  def _start_training(self, input_fn, start, resume_input, live):
    """(state, pipeline, signature, start step): the state the previous call left in
    memory if it is the newest checkpoint, else the newest checkpoint that can be read
    (`_resume`), else a fresh state."""
    if start and (live is None or live.step != start):
      return self._checkpoints().restore_newest(
          lambda step: self._resume(input_fn, step, resume_input), start, set_aside=True)
    pipeline = self._pipeline(input_fn, ModeKeys.TRAIN, self._config.steps_per_loop)
    if start and resume_input and (live.pipeline.fingerprint, live.pipeline.stack) == (
        pipeline.fingerprint, pipeline.stack):
      pipeline = live.pipeline  # the same input: its live iterator continues
    elif start and resume_input:
      logger.info('The input differs from the one of the previous train() call: it starts '
                  'at its own first batch.')
    first = self._first(pipeline, ModeKeys.TRAIN)
    if start:
      live.signature.check(*first)
      return live.state, pipeline, live.signature, start
    signature = Signature.of(*first)
    state = self._runner.init_state(self._config.seed, *self._place_train(first),
                                    ModeKeys.TRAIN, self._optimizer)
    if self._warm_start is not None:  # step 0 only: a model_dir with checkpoints resumes
      state = warm_start(state, self._warm_start)
    return state, pipeline, signature, 0

  def _resume(self, input_fn, step, resume_input):
    """(state, pipeline, signature, step) from the checkpoint of `step`, input included."""
    store = self._checkpoints()
    signature = Signature.from_json(store.metadata(step)['signature'])
    pipeline = self._pipeline(input_fn, ModeKeys.TRAIN, self._config.steps_per_loop)
    if resume_input and store.restore_input(step, pipeline) and pipeline.peek() is None:
      logger.info('The input saved at step %d is exhausted; calling input_fn anew.', step)
      pipeline = self._pipeline(input_fn, ModeKeys.TRAIN, self._config.steps_per_loop)
    first = self._first(pipeline, ModeKeys.TRAIN)
    signature.check(*first)
    abstract = self._runner.abstract_state(*self._place_train(first), ModeKeys.TRAIN,
                                           self._optimizer)
    return store.restore_state(step, abstract), pipeline, signature, step

  def _place_train(self, first):
    """The first batch on the mesh; the optimizer comes from tracing model_fn on it once."""
    batch = self._runner.feed.place(first)
    if self._optimizer is None:
      spec = self._runner.abstract_spec(*batch, ModeKeys.TRAIN)
      self._optimizer, self._train_metric_shapes = spec.optimizer, spec.eval_metrics
      self._mode_hooks[ModeKeys.TRAIN] = (spec.training_hooks, set())
    return batch

  # -- evaluate / predict -------------------------------------------------------

  def _variables(self, mode, checkpoint_path, first):
    """(variables, rng, global_step, global batch) for evaluate/predict.

    Variables come from a checkpoint, or a fresh init with a warning. The host
    batch is first checked against the signature the checkpoint was trained
    with, so a missing or reshaped feature is named before anything compiles.
    """
    live, check_labels = self._live, mode == ModeKeys.EVAL
    if checkpoint_path is None and self._pinned is not None:
      checkpoint_path = self._checkpoints().path(self._pinned)
    if checkpoint_path is None and live and live.step == self._checkpoints().latest_step():
      live.signature.check(*first, check_labels=check_labels)  # the newest step, in memory
      rng = self._runner.scalar(np.asarray(jax.random.PRNGKey(self._config.seed)), np.uint32)
      return live.state.variables, rng, live.step, self._runner.feed(first)
    store, place = self._checkpoints(), self._runner.place_abstract
    if checkpoint_path is not None:
      directory, name = os.path.split(os.path.normpath(os.path.abspath(checkpoint_path)))
      if not name.isdigit() or not os.path.isdir(checkpoint_path):
        raise ValueError(f'checkpoint_path {checkpoint_path!r} is not a checkpoint: expected '
                         "'<model_dir>/<step>', as latest_checkpoint() returns.")
      store = (self._checkpoints() if directory == self._checkpoints().directory
               else CheckpointStore(directory, None, False))
      found = int(name), store.restore_for_inference(int(name), place)
    else:  # the newest checkpoint that can be read
      found = store.restore_newest(lambda step: (step, store.restore_for_inference(step, place)))
    if found is not None:
      step, (variables, metadata) = found
      Signature.from_json(metadata['signature']).check(*first, check_labels=check_labels)
    features, labels = self._runner.feed(first)
    if found is not None:  # another model's checkpoint: name what differs
      check_restorable(store.path(step), variables,
                       self._runner.variable_shapes(features, labels, mode), (), ())
    if found is None:
      logger.warning('Could not find trained model in model_dir: %s, running initialization '
                     'to %s.', self.model_dir, 'evaluate' if mode == ModeKeys.EVAL else 'predict')
      state = self._runner.init_state(self._config.seed, features, labels, mode, None)
      return state.variables, state.rng, 0, (features, labels)
    rng = self._runner.scalar(np.asarray(jax.random.PRNGKey(self._config.seed)), np.uint32)
    return variables, rng, step, (features, labels)

  def evaluate(self, input_fn: Callable, steps: int | None = None,
               hooks: Sequence[Hook] | None = None, checkpoint_path: str | None = None,
               name: str | None = None) -> dict[str, Any]:
    """Metrics over the input (every example exactly once), plus `loss` and `global_step`.

    Evaluates `checkpoint_path`, else the newest checkpoint (the state this
    Estimator's last train() left in memory, when it is that checkpoint).
    The results go to TensorBoard under `eval_dir(name)`. A failed device
    check (`jestimator.check`: an invalid label or id) raises
    `InvalidInputError` after the last batch, naming the first bad batch.
    """
    hooks = check_hooks(hooks, 'evaluate')
    if steps is not None and steps <= 0:
      raise ValueError(f'Must specify steps > 0, given: {steps}')
    pipeline = self._pipeline(input_fn, ModeKeys.EVAL)
    first = self._first(pipeline, ModeKeys.EVAL)
    size = self._runner.feed.padded_size(largest_over_processes(batch_size_of(first[0])))
    variables, rng, global_step, placed = self._variables(ModeKeys.EVAL, checkpoint_path,
                                                          pad_batch(first, size)[0])
    hooks = [*hooks, *self._hooks_of(ModeKeys.EVAL, placed)[0]]
    results = run_evaluation(self, self._runner, self._config, pipeline, size, variables, rng,
                             global_step, placed, steps, hooks)
    logger.info('Evaluation%s at global step %d: %s', f' {name!r}' if name else '', global_step,
                ', '.join(f'{k} = {v:.6g}' if np.ndim(v) == 0 else f'{k} = {v}'
                          for k, v in sorted(results.items())))
    record_evaluation(self, results, name, checkpoint_path)
    return results

  def predict(self, input_fn: Callable, predict_keys: Sequence[str] | str | None = None,
              hooks: Sequence[Hook] | None = None, checkpoint_path: str | None = None,
              yield_single_examples: bool = True) -> Iterator[Any]:
    """Yields one prediction per input example, in input order (padding stripped).

    With several processes, each process yields the predictions of its own
    input (its input_fn's examples), in its input order. A failed device check
    (`jestimator.check`) raises `InvalidInputError` after the last prediction.
    """
    hooks = check_hooks(hooks, 'predict')
    if isinstance(predict_keys, str):
      predict_keys = [predict_keys]
    pipeline = self._pipeline(input_fn, ModeKeys.PREDICT)
    first = self._first(pipeline, ModeKeys.PREDICT)
    size = self._runner.feed.padded_size(largest_over_processes(batch_size_of(first[0])))
    variables, rng, _, placed = self._variables(ModeKeys.PREDICT, checkpoint_path,
                                                pad_batch(first, size)[0])
    spec_hooks, available = self._hooks_of(ModeKeys.PREDICT, placed)
    hooks = [*hooks, *spec_hooks]
    yield from run_prediction(
        self, self._runner, self._config, pipeline, size, variables, rng, hooks, available,
        lambda p, n: unbatch(p, n, self._mesh, self._config.data_axis, self._transforms,
                             predict_keys, yield_single_examples))

  def _hooks_of(self, mode: str, placed) -> tuple[tuple, set]:
    """(the model_fn's hooks for `mode`, its prediction keys): traced once per mode."""
    if mode not in self._mode_hooks:
      spec = self._runner.abstract_spec(*placed, mode)
      p = spec.predictions
      self._mode_hooks[mode] = (
          spec.evaluation_hooks if mode == ModeKeys.EVAL else spec.prediction_hooks,
          set(p) if isinstance(p, dict) else {'predictions'})
    return self._mode_hooks[mode]

  # -- export -------------------------------------------------------------------

  def export_saved_model(self, export_dir_base: str, serving_input_receiver_fn: Callable,
                         assets_extra: dict | None = None, as_text: bool = False,
                         checkpoint_path: str | None = None,
                         experimental_mode: str = ModeKeys.PREDICT) -> str:
    """A TF SavedModel for TF Serving under `export_dir_base/<timestamp>` (see
    `jestimator.export.saved_model`); returns its path."""
    from jestimator.export.saved_model import export_saved_model  # pylint: disable=import-outside-toplevel
    return export_saved_model(self, export_dir_base, serving_input_receiver_fn, assets_extra,
                              as_text, checkpoint_path, experimental_mode)

  def export_jax(self, export_dir: str, checkpoint_path: str | None = None) -> str:
    """A JAX-native artifact (`jax.export` StableHLO + variables) loadable without
    TensorFlow by `je.export.load_jax` (see `jestimator.export.jax_artifact`)."""
    from jestimator.export.jax_artifact import export_jax  # pylint: disable=import-outside-toplevel
    return export_jax(self, export_dir, checkpoint_path)
