"""`HookSet`: the hooks of one train / evaluate / predict call, run by its loop.

It validates the hooks and their `Request`s once (unknown keys are named with
the keys that exist), tells the loop which steps it must stop on
(`cadences`, so a K-step dispatch never jumps over a requested step) and
which values to fetch after a dispatch (`due`, `keys`), and hands each hook
the values it asked for. The fetching itself is the loop's: one
`jax.device_get` for the log line and every hook together.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Sequence

from jestimator.hooks.base import CheckpointSaverListener, Hook, Request, RunContext

_METHODS = ('begin', 'after_step', 'end')


def check_hooks(hooks: Iterable[Any] | None, where: str) -> list:
  """`hooks` as a list, each a Hook (begin / after_step / end), else a TypeError."""
  hooks = list(hooks or [])
  for hook in hooks:
    if not all(callable(getattr(hook, m, None)) for m in _METHODS):
      raise TypeError(f'{where}: hooks must be je.hooks.Hook instances (begin / after_step / '
                      f'end); got {type(hook).__name__}: {hook!r}.')
  return hooks


def check_listeners(listeners: Iterable[Any] | None) -> list:
  listeners = list(listeners or [])
  for listener in listeners:
    if not all(callable(getattr(listener, m, None)) for m in ('before_save', 'after_save')):
      raise TypeError('saving_listeners must be je.hooks.CheckpointSaverListener instances '
                      f'(before_save / after_save); got {type(listener).__name__}: '
                      f'{listener!r}.')
  return listeners


class HookSet:
  """Hooks (and saving listeners) of one call, with their requests and clocks.

  Args:
    hooks: Hook instances (user's, the spec's and the loop's own).
    ctx: the call's RunContext, shared by the hooks.
    available: the keys a hook may request in this mode (a KeyError-like
      ValueError names the unknown ones and these).
    listeners: CheckpointSaverListeners (train only).
  """

  def __init__(self, hooks: Sequence[Any], ctx: RunContext, available: Iterable[str],
               listeners: Sequence[CheckpointSaverListener] = ()):
    self.hooks, self.ctx, self.listeners = list(hooks), ctx, list(listeners)
    self.available = sorted(set(available))
    self._requests: list[tuple[Any, Request]] = []
    self._last_time: dict[int, float] = {}

  def _collect_requests(self) -> None:
    for hook in self.hooks:
      request = getattr(hook, 'requests', lambda: None)()
      if request is None or (not request.keys):
        continue
      if not isinstance(request, Request):
        raise TypeError(f'{type(hook).__name__}.requests() must return a je.hooks.Request or '
                        f'None, got {request!r}.')
      if '*' in request.keys:  # every key this mode produces
        request = dataclasses.replace(request, keys=tuple(self.available))
      unknown = [k for k in request.keys if k not in self.available]
      if unknown:
        raise ValueError(
            f'{type(hook).__name__} requests {unknown}, which {self.ctx.mode!r} does not '
            f'produce; the keys it can have are {self.available}.')
      self._requests.append((hook, request))
      self._last_time[id(hook)] = time.monotonic()

  # -- the loop's calls ----------------------------------------------------------

  def begin(self) -> None:
    """`begin` then `after_restore` of every hook; the requests are read after begin."""
    for listener in self.listeners:
      getattr(listener, 'begin', lambda: None)()
    for hook in self.hooks:
      hook.begin(self.ctx)
    self._collect_requests()
    for hook in self.hooks:
      getattr(hook, 'after_restore', lambda ctx: None)(self.ctx)

  @property
  def cadences(self) -> tuple[int, ...]:
    """The step cadences some hook asked for (the loop stops on their multiples)."""
    return tuple(sorted({r.every_n_steps for _, r in self._requests if r.every_n_steps}))

  def due(self, step: int) -> list:
    """The hooks whose values are due after the dispatch that ended at `step`."""
    now, due = time.monotonic(), []
    for hook, request in self._requests:
      if request.every_n_steps and step % request.every_n_steps == 0:
        due.append(hook)
      elif request.every_n_secs is not None and (
          now - self._last_time[id(hook)] >= request.every_n_secs):
        self._last_time[id(hook)] = now
        due.append(hook)
    return due

  def at_end(self) -> list:
    return [hook for hook, request in self._requests if request.at_end]

  def keys(self, hooks: Iterable[Any]) -> set[str]:
    wanted = {id(h) for h in hooks}
    return {k for hook, request in self._requests if id(hook) in wanted for k in request.keys}

  def _values_for(self, hook, values: dict | None) -> dict:
    if not values:
      return {}
    for h, request in self._requests:
      if h is hook:
        return {k: values[k] for k in request.keys if k in values}
    return {}

  def after_step(self, step: int, state: Any, due: Sequence[Any] = (),
                 values: dict | None = None) -> None:
    """Calls every hook's after_step, with its requested values if it is `due`."""
    ctx = self.ctx
    ctx.step, ctx.state, ctx.values = step, state, {}
    if not due:  # the common step: nothing fetched
      for hook in self.hooks:
        hook.after_step(ctx)
      return
    due_ids = {id(h) for h in due}
    for hook in self.hooks:
      ctx.values = self._values_for(hook, values) if id(hook) in due_ids else {}
      hook.after_step(ctx)
    ctx.values = {}

  def around_save(self, save: Callable[[], None]) -> None:
    """`before_save` of hooks and listeners, the save, then their `after_save`."""
    ctx = self.ctx
    for hook in self.hooks:
      getattr(hook, 'before_save', lambda c: None)(ctx)
    for listener in self.listeners:
      listener.before_save(ctx)
    save()
    for hook in self.hooks:
      getattr(hook, 'after_save', lambda c: None)(ctx)
    for listener in self.listeners:
      if listener.after_save(ctx):
        ctx.request_stop()

  def end(self, values_fn: Callable[[set[str]], dict] | None = None) -> None:
    """Calls `end` on every hook, with `values_fn(keys)` for those that asked `at_end`."""
    ctx = self.ctx
    finals = self.at_end()
    values = values_fn(self.keys(finals)) if finals and values_fn is not None else None
    final_ids = {id(h) for h in finals}
    for hook in self.hooks:
      ctx.values = self._values_for(hook, values) if id(hook) in final_ids else {}
      hook.end(ctx)
    ctx.values = {}

  def close(self) -> None:
    """Releases what hooks hold (their optional `close()`: e.g. a running profiler
    trace), also when the loop ends with an error and `end` never ran."""
    for hook in self.hooks:
      getattr(hook, 'close', lambda: None)()

  def end_listeners(self) -> None:
    for listener in self.listeners:
      getattr(listener, 'end', lambda c: None)(self.ctx)

  @property
  def stop_requested(self) -> bool:
    return self.ctx.stop_requested


__all__ = ['HookSet', 'check_hooks', 'check_listeners', 'Hook']
