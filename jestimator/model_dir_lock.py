"""One writer per model_dir: `train()` holds `<model_dir>/.jestimator.lock` while it runs.

Two trainers on one model_dir would overwrite each other's checkpoints. The
lock is an exclusive `flock` on a small JSON file naming its holder (pid, host,
start time); the kernel drops it when the holder dies, so a lock file left by
a dead process is taken over, with a warning naming that process. The file is
removed on release. evaluate and predict never lock: they read finished steps
only. With several processes (which share the model_dir) only process 0 locks,
and all of them learn whether it could.

`hold_model_dir` first checks, on the host, that model_dir is a directory this
process can write, so that orbax never meets an unusable one (it would time
out waiting for its own background thread).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
import time
from typing import Iterator

import jax

from jestimator.distribute.multiprocess import all_processes
from jestimator.reporting import logger

LOCK_NAME = '.jestimator.lock'
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class ModelDirLockedError(RuntimeError):
  """Another live process is training into the same model_dir."""


def _is_remote(path: str) -> bool:
  return '://' in path  # gs://, s3://: orbax's business, no local file system checks


def check_writable(model_dir: str) -> None:
  """Raises ValueError if `model_dir` is a file, or cannot be created or written."""
  path = os.path.abspath(model_dir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f'model_dir {path!r} is a file, not a directory: give Estimator a '
                     'directory path for its checkpoints.')
  try:
    os.makedirs(path, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix='.jestimator-write-test-', dir=path)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    where = f' ({e.filename})' if e.filename and e.filename != path else ''
    raise ValueError(f'model_dir {path!r} is not writable: {e.strerror}{where}. train() '
                     'writes its checkpoints there; give a directory this process can write '
                     '(evaluate and predict only read theirs).') from e


def _holder(text: str) -> dict:
  try:
    holder = json.loads(text)
    return holder if isinstance(holder, dict) else {}
  except ValueError:
    return {}


def _describe(holder: dict) -> str:
  if not holder:
    return 'a process that did not say who it is'
  mine = holder.get('pid') == os.getpid() and holder.get('host') == socket.gethostname()
  who = 'this very process' if mine else 'pid {pid} on host {host!r}'.format(
      pid=holder.get('pid'), host=holder.get('host'))
  return f"{who} (since {holder.get('started', '?')})"


def _alive(holder: dict) -> bool:
  """Whether the holder may still run: unknown hosts are assumed alive."""
  if holder.get('host') != socket.gethostname() or not isinstance(holder.get('pid'), int):
    return True
  try:
    os.kill(holder['pid'], 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class _Lock:
  """The lock file of one model_dir, held by this process between acquire and release."""

  def __init__(self, model_dir: str):
    self.model_dir = os.path.abspath(model_dir)
    self.path = os.path.join(self.model_dir, LOCK_NAME)
    self._fd: int | None = None

  def _refuse(self, holder: dict) -> ModelDirLockedError:
    return ModelDirLockedError(
        f'model_dir {self.model_dir!r} is being trained by {_describe(holder)}, which holds '
        f'{self.path}. One train() per model_dir at a time: wait for it to end, stop it, or '
        'train into another model_dir (evaluate and predict need no lock).')

  def acquire(self) -> None:
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _holder(os.pread(fd, 4096, 0).decode(errors='replace'))
        os.close(fd)
        raise self._refuse(holder) from None
      except OSError as e:
        if e.errno not in _NO_FLOCK:
          os.close(fd)
          raise
        # A file system without locks: trust the holder's pid, if it is on this host.
        previous = _holder(os.pread(fd, 4096, 0).decode(errors='replace'))
        if previous and _alive(previous):
          os.close(fd)
          raise self._refuse(previous) from None
        break
      try:
        if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
          break  # else a releasing holder removed the file meanwhile: lock the new one
      except FileNotFoundError:
        pass
      os.close(fd)
    previous = _holder(os.pread(fd, 4096, 0).decode(errors='replace'))
    if previous:
      logger.warning('Took over the lock of model_dir %s left by %s, which no longer runs.',
                     self.model_dir, _describe(previous))
    me = {'pid': os.getpid(), 'host': socket.gethostname(),
          'started': time.strftime('%Y-%m-%d %H:%M:%S')}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    self._fd = fd

  def release(self) -> None:
    if self._fd is None:
      return
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass
    os.close(self._fd)  # drops the flock
    self._fd = None


@contextlib.contextmanager
def hold_model_dir(model_dir: str) -> Iterator[None]:
  """Checks that model_dir is writable and holds its lock (process 0) for the block.

  Raises ValueError for an unusable model_dir and ModelDirLockedError when
  another live process holds the lock; with several processes, all of them
  raise when one fails (the one that failed says why).
  """
  if _is_remote(model_dir):
    yield
    return
  lock, problem = (_Lock(model_dir) if jax.process_index() == 0 else None), None
  try:
    check_writable(model_dir)
    if lock is not None:
      lock.acquire()
  except Exception as e:  # pylint: disable=broad-except  (the other processes must stop too)
    problem = e
  if not all_processes(problem is None):
    if lock is not None:
      lock.release()
    raise problem or ModelDirLockedError(
        f'another process could not start training into model_dir '
        f'{os.path.abspath(model_dir)!r}; its error says why (process 0 holds the lock, '
        'so a trainer already running there is named by process 0).')
  try:
    yield
  finally:
    if lock is not None:
      lock.release()
