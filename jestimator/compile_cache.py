"""JAX's persistent compilation cache, on by default (`RunConfig.compilation_cache_dir`).

A fresh process otherwise compiles every step again (seconds per executable
on CPU, more on accelerators); with the cache on disk the second run loads
them instead. JAX only writes executables that took at least
`jax_persistent_cache_min_compile_time_secs` (default 1 s) to compile, which
leaves out most CPU steps, so we lower it to `MIN_COMPILE_TIME_SECS`.

JAX has one cache per process, opened at the first compile after a directory
is set. So the first directory wins: a cache directory the user configured
(`jax.config` or `JAX_COMPILATION_CACHE_DIR`) is kept with its settings, and
an Estimator asking for another directory than the one in use (other than
the default, which is no request) gets a warning, not a switch.
"""

from __future__ import annotations

import logging
import os
import threading

import jax

logger = logging.getLogger('jestimator')

# Compile time (seconds) from which an executable is written to the cache: the
# init and train steps of small CPU models compile in 0.05-0.5 s; eager debug-mode
# ops (one executable per primitive) mostly stay under it.
MIN_COMPILE_TIME_SECS = 0.1
_JAX_DEFAULT_MIN_COMPILE_TIME_SECS = 1.0

_lock = threading.Lock()
_in_use: str | None = None  # the directory this process's cache is at, once chosen
_warned: set[str] = set()


def default_cache_dir() -> str:
  """`$XDG_CACHE_HOME/jestimator/jax` (or `~/.cache/jestimator/jax`)."""
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'jestimator', 'jax')


def enable_compilation_cache(directory: str | os.PathLike | None) -> None:
  """Points JAX's persistent compilation cache at `directory` (None: leaves it as it is).

  Keeps a directory already configured in JAX, and the first one set here:
  JAX's cache is per process. Logs the directory used once per process.
  """
  global _in_use
  if directory is None:
    return
  directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
  with _lock:
    if _in_use is None:
      configured = jax.config.jax_compilation_cache_dir
      if configured:
        _in_use = os.path.abspath(os.path.expanduser(configured))
        logger.debug('JAX compilation cache: %s (configured in JAX; kept).', _in_use)
      else:
        _in_use = directory
        jax.config.update('jax_compilation_cache_dir', directory)
        _lower_thresholds()
        logger.debug('JAX compilation cache: %s (executables compiled in >= %g s).', directory,
                     jax.config.jax_persistent_cache_min_compile_time_secs)
      if not jax.config.jax_enable_compilation_cache:
        logger.debug('JAX compilation cache: off (jax_enable_compilation_cache=False).')
    asked = directory != os.path.abspath(default_cache_dir())  # not just the default
    if directory != _in_use and asked and directory not in _warned:
      _warned.add(directory)
      logger.warning('compilation_cache_dir %s is ignored: this process already caches '
                     'compiled steps in %s (JAX keeps one cache per process; the first '
                     'wins).', directory, _in_use)


def _lower_thresholds() -> None:
  """Caches executables from `MIN_COMPILE_TIME_SECS` of compile time, of any size; a
  threshold the user changed from JAX's default stays."""
  if jax.config.jax_persistent_cache_min_compile_time_secs == _JAX_DEFAULT_MIN_COMPILE_TIME_SECS:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_TIME_SECS)
  if jax.config.jax_persistent_cache_min_entry_size_bytes == 0:  # JAX's default
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)  # -1: no size limit
