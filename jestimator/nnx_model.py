"""Flax NNX modules inside a model_fn: `je.nnx_model(lambda rngs: MyModel(..., rngs=rngs))`.

  def model_fn(features, labels, mode):
    model = je.nnx_model(lambda rngs: MLP(8, 32, 3, rngs=rngs))
    logits = model(features['x'])    # Dropout / BatchNorm follow `mode`
    ...

The NNX counterpart of creating Linen layers inline. The NNX module becomes a
Linen child of the model_fn's implicit root module (the scheme of flax's
bridge, `flax.nnx.bridge.ToLinen`), so its state is plain Linen variables that
the runner threads like any Linen layer's:

- `nnx.Param`s land in `params` (optimised, checkpointed, matched by
  `partition_rules` as `'params/NnxModel_0/linear1/kernel'`); `nnx.BatchStat`s
  in `batch_stats`, a mutable collection that only TRAIN steps update; other
  variable types in the collection NNX names for them.
- RNG state is not stored. Every call builds a fresh `nnx.Rngs` from the
  runner's Flax RNG streams (`RunConfig.rng_streams`, fed `fold_in(seed, step)`),
  so dropout differs by step, repeats for a seed, and resume is exact.
- Mode follows `ModeKeys`: the module is switched with NNX's own `train()` for
  TRAIN and `eval()` for EVAL and PREDICT (they set Dropout's `deterministic`
  and BatchNorm's `use_running_average`, and the same attributes of a user's
  modules), so `model(x)` needs no flags. `mode=` overrides.

Each call re-creates the NNX module from `factory`, loads the stored arrays
into it (`nnx.update`), calls it, and stores back what a mutable collection
changed. Under `jit` the initializers' output is unused and compiled away (in
`RunConfig(debug=True)`'s eager steps they do run). The module's Variables are
new objects filled from plain arrays, never shared with the caller or between
traces, so the `nnx.merge(graphdef, state, copy=True)` that splitting and
merging a stateful module (BatchNorm, Dropout) inside `jit` + `grad` needs,
lest its writes land in Variables held outside, has no counterpart here.

Why not `ToLinen` itself: it names Linen variables by the raw NNX path, so
an `nnx.List` of layers gives integer keys (`layers/0/kernel` with key `0`),
which checkpoint metadata and the exporters read back as strings and `ToLinen`
then fails to load (`KeyError: 'Invalid key: 0'`); here names are strings and
are matched back to the module's own paths. It also keeps variable metadata
(`nnx.with_partitioning`) in boxes, where jestimator stores plain arrays
sharded by `RunConfig.partition_rules`, and forwards methods by the module's
class, which a factory does not name. Its RNG hand-over is reused as is.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
from flax import nnx
from flax.nnx.bridge import wrappers

from jestimator.spec import ModeKeys
from jestimator.training import transform

_MODES = (ModeKeys.TRAIN, ModeKeys.EVAL, ModeKeys.PREDICT)
_STORED = nnx.Not(nnx.RngState)  # RNG state is re-created from the runner's streams


def _names(module: nnx.Module) -> dict[tuple[str, ...], tuple[Any, ...]]:
  """Variable name (path as strings) -> the module's own path (`('layers', 0, 'kernel')`)."""
  return {tuple(map(str, path)): path
          for path, _ in nnx.to_flat_state(nnx.state(module, _STORED))}


def _load(module: nnx.Module, variables: Any) -> None:
  """Sets every stored Variable of `module` from the Linen `variables` (collections)."""
  own, flat = _names(module), {}
  for collection, tree in variables.items():
    for name, value in nnx.traversals.flatten_mapping(tree).items():
      if name not in own:
        raise ValueError(f'je.nnx_model: {collection}/{"/".join(name)} is stored but '
                         f'{type(module).__name__} has no such variable; its variables: '
                         f'{sorted("/".join(n) for n in own)[:8]}.')
      flat[own.pop(name)] = value
  if own:
    raise ValueError(f'je.nnx_model: {type(module).__name__} has variables that are not stored: '
                     f'{sorted("/".join(n) for n in own)[:8]}.')
  nnx.update(module, nnx.State.from_flat_path(flat))


class NnxModel(nn.Module):
  """One NNX module's state as Linen variables; created by `nnx_model`.

  `model(*args, **kwargs)` calls the NNX module; `model(..., nnx_method='encode')`
  calls its `encode` method.
  """

  build: Callable[[nnx.Rngs], nnx.Module]

  @nn.compact
  def __call__(self, *args, nnx_method: str | None = None, **kwargs):
    initializing = self.is_initializing()
    # Streams as Linen hands them out; `default` (apply only) feeds the unused initializers.
    module = self.build(nnx.Rngs(**wrappers.linen_rngs_dict(self, add_default=not initializing)))
    if initializing:
      self._store(module)  # the initial state, before this call changes batch statistics
    else:
      _load(module, self.variables)
    out = (module if nnx_method is None else getattr(module, nnx_method))(*args, **kwargs)
    if not initializing:
      self._store(module)
    return out

  def _store(self, module: nnx.Module) -> None:
    """Puts the module's Variables of every mutable collection, keyed by string names."""
    flat: dict[str, dict] = {}
    for path, variable in nnx.to_flat_state(nnx.state(module, _STORED)):
      collection = nnx.variable_name_from_type(type(variable), allow_register=True)
      if self.is_mutable_collection(collection):
        flat.setdefault(collection, {})[tuple(map(str, path))] = variable.get_value()
    for collection, values in flat.items():
      for name, tree in nnx.traversals.unflatten_mapping(values).items():
        self.put_variable(collection, name, tree)


def _running_mode() -> str:
  """The `mode` of the model_fn call in progress."""
  mode = transform.current_mode()
  if mode is None:
    raise ValueError('je.nnx_model(...) must be called inside a model_fn that an Estimator '
                     'runs, or be given mode=.')
  return mode


def _builder(factory: Callable[[nnx.Rngs], nnx.Module], mode: str) -> Callable[..., nnx.Module]:
  """`factory`, then the module switched to `mode` (NNX's `train()` / `eval()`)."""

  def build(rngs: nnx.Rngs) -> nnx.Module:
    try:
      module = factory(rngs)
    except (KeyError, AttributeError) as e:
      if 'No RngStream named' not in str(e):
        raise
      raise ValueError(f'je.nnx_model: {e.args[0]} It has {sorted(rngs)}: `params` at init '
                       'and RunConfig.rng_streams; add the stream to RunConfig(rng_streams=...).'
                       ) from e
    if not isinstance(module, nnx.Module):
      raise TypeError(f'je.nnx_model: the factory must return an nnx.Module, got '
                      f'{type(module).__name__}.')
    if mode == ModeKeys.TRAIN:
      module.train()
    else:
      module.eval()
    return module

  return build


def nnx_model(factory: Callable[[nnx.Rngs], nnx.Module], *, mode: str | None = None,
              name: str | None = None) -> NnxModel:
  """An NNX module built by `factory(rngs)`, usable inside a model_fn as `model(x)`.

  Args:
    factory: `lambda rngs: MyModel(..., rngs=rngs)`; called with an `nnx.Rngs`
      holding `params` (at init) and the runner's streams (`dropout`, ...).
      A module's call-time streams must be in `RunConfig.rng_streams`.
    mode: a `ModeKeys` value; by default the mode the model_fn was called with.
      TRAIN calls the module's `train()`, EVAL and PREDICT its `eval()`.
    name: the variables' scope (`params/<name>/...`); default `NnxModel_<i>`.

  Returns:
    A Linen module: `model(*args, **kwargs)` runs the NNX module's `__call__`,
    `model(*args, nnx_method='encode')` its `encode`.
  """
  if not callable(factory):
    raise TypeError(f'je.nnx_model takes a factory `lambda rngs: Module(..., rngs=rngs)`, got '
                    f'{factory!r}.')
  mode = _running_mode() if mode is None else mode
  if mode not in _MODES:
    raise ValueError(f'je.nnx_model: mode must be one of {_MODES}, got {mode!r}.')
  return NnxModel(_builder(factory, mode), name=name)
