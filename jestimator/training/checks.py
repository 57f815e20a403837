"""Deferred device checks: assertions on device values, read at the next host sync.

Nothing inside a compiled step can raise, and reading a value every step
would stall the host on the device. So `check(pred, message, **values)`
called while a step is traced (heads, feature columns, a model_fn) only
*collects* the condition; the step folds every collected check into a small
replicated pytree, the `CheckSlot`, threaded from dispatch to dispatch like
the train state. The slot keeps the first failure only: where (the global
step, or evaluate/predict's batch index), which check, the position of the
first failing element and the values the message names. The host reads it
(`read`) only where it already syncs -- log steps, saves, the end of
evaluate/predict -- and raises `InvalidInputError`; the train loop reads it
before every save, so a state that saw a failing step is never checkpointed.

  def model_fn(features, labels, mode):
    je.check(features['age'] >= 0, 'age must be >= 0, got {age} at row {index}',
             age=features['age'])
    ...

A message is a `str.format` template. Keyword values are either static
(Python numbers and strings: part of the message) or arrays: scalars, or
arrays broadcastable to `pred`'s shape, of which the element at the first
failing position is kept. `{index}` is that position in the array as the
step saw it (with the shard_map runner or gradient accumulation, within the
failing device's shard or micro-batch). At most `MAX_VALUES` array
values per check. In evaluate/predict, rows of the padding mask are exempt
when `pred`'s leading axis is the batch.

Outside a compiled step: with concrete values a failing check raises at
once; with traced values and no step collecting (a user's own `jax.jit`),
it does nothing. Checks must run at the step's own trace level: not inside
a lifted transform (`nn.scan`, `nn.remat`, `jax.lax.scan` in a model_fn).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
import zlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jestimator.example_mask import example_mask

MAX_VALUES = 4  # array values one check's message may name

_FOUND: contextvars.ContextVar = contextvars.ContextVar('jestimator_checks', default=None)
_REGISTRY: dict[int, '_Spec'] = {}
_LOCK = threading.Lock()


class InvalidInputError(ValueError):
  """A deferred device check failed (an invalid label, an out-of-range id, a user check)."""


@dataclasses.dataclass(frozen=True)
class _Spec:
  """What the host needs to format a check's message; static, found by its code."""

  message: str
  statics: tuple[tuple[str, Any], ...]
  names: tuple[str, ...]
  kinds: tuple[str, ...]  # 'i' (int32 slot), 'f' (float32 slot) or 'b' (bool, int32 slot)
  shape: tuple[int, ...]


def _code(spec: _Spec) -> int:
  """A stable int32 code for `spec` (the same in every process and every trace)."""
  code = zlib.crc32(repr(spec).encode()) & 0x7FFFFFFF
  with _LOCK:
    while code in _REGISTRY and _REGISTRY[code] != spec:
      code = (code + 1) & 0x7FFFFFFF
    _REGISTRY[code] = spec
  return code


class CheckSlot(NamedTuple):
  """The first failed check of a run, on device (every leaf replicated).

  step: int32, -1 while every check holds; then the global step (train) or
    the batch index (evaluate/predict) where the first failure happened.
  code: int32, which check (registry key); index: int32, flat position of
    the first failing element; ints/floats: `[MAX_VALUES]` values it names.
  """

  step: jax.Array
  code: jax.Array
  index: jax.Array
  ints: jax.Array
  floats: jax.Array


def empty_slot() -> CheckSlot:
  """A host (numpy) slot with no failure; the runner places it on the mesh."""
  return CheckSlot(np.int32(-1), np.int32(0), np.int32(0), np.zeros(MAX_VALUES, np.int32),
                   np.zeros(MAX_VALUES, np.float32))


@dataclasses.dataclass(frozen=True)
class _Pending:
  pred: jax.Array
  code: int
  values: tuple[jax.Array, ...]


def _spec_and_values(pred: jax.Array, message: str, values: dict) -> tuple[_Spec, list]:
  if 'index' in values:
    raise ValueError(f"check {message!r}: 'index' is the position of the first failure; name "
                     'the value otherwise.')
  statics, names, kinds, arrays = [], [], [], []
  for name, value in sorted(values.items()):
    if isinstance(value, (str, bytes, int, float, bool)) and not isinstance(value, np.generic):
      statics.append((name, value))
      continue
    value = jnp.asarray(value)
    if value.shape != () and value.shape != pred.shape:
      try:
        value = jnp.broadcast_to(value, pred.shape)
      except ValueError:
        raise ValueError(f'check {message!r}: value {name!r} of shape {value.shape} does not '
                         f'broadcast to the condition shape {pred.shape}.') from None
    if jnp.issubdtype(value.dtype, jnp.floating):
      kinds.append('f')
    elif jnp.issubdtype(value.dtype, jnp.integer) or value.dtype == jnp.bool_:
      kinds.append('b' if value.dtype == jnp.bool_ else 'i')
    else:
      raise ValueError(f'check {message!r}: value {name!r} has dtype {value.dtype}; checks '
                       'record integers, booleans and floats.')
    names.append(name)
    arrays.append(value)
  if len(arrays) > MAX_VALUES:
    raise ValueError(f'check {message!r}: at most {MAX_VALUES} array values per message, got '
                     f'{names}.')
  return _Spec(message, tuple(statics), tuple(names), tuple(kinds), tuple(pred.shape)), arrays


def _is_traced(tree: Any) -> bool:
  return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def check(pred: Any, message: str, **values: Any) -> None:
  """Asserts that every element of `pred` is True, deferred to the next host sync.

  Args:
    pred: a boolean array (any shape); the check fails where it is False.
    message: a `str.format` template over `values` and `{index}`.
    **values: static numbers/strings, or arrays (scalars or broadcastable to
      `pred`) whose element at the first failing position the message shows.

  Raises:
    InvalidInputError: at once, when `pred` is concrete and fails outside a step.
  """
  pred = jnp.asarray(pred)
  if pred.dtype != jnp.bool_:
    raise TypeError(f'check {message!r}: the condition must be boolean, got {pred.dtype}.')
  mask = example_mask()
  if mask is not None and pred.ndim >= 1 and pred.shape[0] == mask.shape[0]:
    padding = jnp.reshape(mask == 0, mask.shape + (1,) * (pred.ndim - 1))
    pred = pred | padding
  spec, arrays = _spec_and_values(pred, message, values)
  found = _FOUND.get()
  if found is not None:
    found.append(_Pending(pred, _code(spec), tuple(arrays)))
  elif not _is_traced((pred, arrays)):
    ok = np.asarray(pred)
    if not ok.all():
      index = int(np.argmin(ok.reshape(-1)))
      picked = [np.asarray(a).reshape(-1)[index] if a.ndim else np.asarray(a)[()]
                for a in arrays]
      raise InvalidInputError(_format(spec, index, picked))


@contextlib.contextmanager
def collecting():
  """Collects the checks made while the body traces; yields the list `first_failure` reads."""
  found: list[_Pending] = []
  token = _FOUND.set(found)
  try:
    yield found
  finally:
    _FOUND.reset(token)


def _one(pending: _Pending, at: jax.Array) -> CheckSlot:
  flat = jnp.reshape(pending.pred, (-1,))
  failed = ~jnp.all(flat)
  index = jnp.argmin(flat).astype(jnp.int32) if flat.size else jnp.int32(0)
  ints = jnp.zeros(MAX_VALUES, jnp.int32)
  floats = jnp.zeros(MAX_VALUES, jnp.float32)
  for j, value in enumerate(pending.values):
    picked = jnp.reshape(value, (-1,))[index] if value.ndim else value
    if jnp.issubdtype(value.dtype, jnp.floating):
      floats = floats.at[j].set(picked.astype(jnp.float32))
    else:
      ints = ints.at[j].set(picked.astype(jnp.int32))
  step = jnp.where(failed, jnp.asarray(at, jnp.int32), -1)
  return CheckSlot(step, jnp.int32(pending.code), index, ints, floats)


def first_failure(found: list, at: jax.Array) -> CheckSlot:
  """The first failing check of `found` (in trace order) as a slot at step `at`."""
  slot = jax.tree.map(jnp.asarray, empty_slot())
  for pending in reversed(found):  # the earliest failure is merged last, so it wins
    slot = merge(_one(pending, at), slot)
  return slot


def merge(first: CheckSlot, second: CheckSlot) -> CheckSlot:
  """`first` if it holds a failure, else `second`: the earlier failure wins."""
  keep = first.step >= 0
  return jax.tree.map(lambda a, b: jnp.where(keep, a, b), first, second)


def agree(slot: CheckSlot, axis_name: str) -> CheckSlot:
  """Inside `shard_map`: the failure of the lowest-numbered failing device, on every device.

  Built from psum/pmin, so the result is invariant over the axis and can
  leave shard_map replicated.
  """
  me = jax.lax.axis_index(axis_name)
  failed = slot.step >= 0
  big = jnp.iinfo(jnp.int32).max
  winner = jax.lax.pmin(jnp.where(failed, me, big), axis_name)
  mine = me == winner
  agreed = jax.tree.map(lambda x: jax.lax.psum(jnp.where(mine, x, jnp.zeros_like(x)), axis_name),
                        slot)
  return agreed._replace(step=jnp.where(winner == big, -1, agreed.step))


@dataclasses.dataclass(frozen=True)
class Failure:
  """A failed check, read on the host: where (`step`) and what (`message`)."""

  step: int
  message: str
  template: str


def read(slot: CheckSlot) -> Failure | None:
  """Fetches `slot` to the host (the one device sync); the failure, or None."""
  host = jax.device_get(slot)
  step = int(host.step)
  if step < 0:
    return None
  spec = _REGISTRY.get(int(host.code))
  if spec is None:
    return Failure(step, f'a device check failed (unknown code {int(host.code)})', '')
  index = int(host.index)
  picked = []
  for j, kind in enumerate(spec.kinds):
    picked.append(host.floats[j] if kind == 'f' else
                  np.bool_(host.ints[j]) if kind == 'b' else host.ints[j])
  return Failure(step, _format(spec, index, picked), spec.message)


def _format(spec: _Spec, flat_index: int, picked: list) -> str:
  index = tuple(int(i) for i in np.unravel_index(flat_index, spec.shape)) if spec.shape else ()
  values = {**dict(spec.statics), **dict(zip(spec.names, picked))}
  try:
    return spec.message.format(index=index, **values)
  except (KeyError, IndexError, ValueError):
    return f'{spec.message} ({", ".join(f"{k}={v}" for k, v in values.items())}, index={index})'


def raise_if_failed(slot: CheckSlot, call: str) -> None:
  """Reads `slot` after `call`'s last batch ('evaluate', 'predict'); raises its failure."""
  failure = read(slot)
  if failure is not None:
    raise InvalidInputError(f'In {call}, batch {failure.step} of the input: {failure.message}')
