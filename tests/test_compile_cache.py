"""The persistent compilation cache: a second process loads the steps the first compiled.

Processes are real (a fresh interpreter per run: JAX opens its cache once per
process); the rules for choosing the directory (the first wins, a directory
configured in JAX is kept, None changes nothing) are checked in this process
on a saved and restored `jax.config`.
"""

import json
import logging
import os
import subprocess
import sys

import jax
import pytest

from jestimator import compile_cache

_CHILD = 'train-two-steps'
_JAX_CACHE_OPTIONS = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
                      'jax_persistent_cache_min_entry_size_bytes')


def _train_two_steps(cache_dir: str | None) -> None:
  """The child: trains 2 steps with `cache_dir`; prints the cache hits JAX logged as JSON."""
  import flax.linen as nn  # noqa: PLC0415 -- the child's own imports
  import numpy as np  # noqa: PLC0415
  import optax  # noqa: PLC0415

  import jestimator as je  # noqa: PLC0415

  hits = []

  class Hits(logging.Handler):
    def emit(self, record):
      if record.getMessage().startswith('Persistent compilation cache hit for'):
        hits.append(record.args[0])  # the module name, e.g. 'jit_train_step'

  compiler_log = logging.getLogger('jax._src.compiler')
  compiler_log.setLevel(logging.DEBUG)
  compiler_log.addHandler(Hits())

  def model_fn(features, labels, mode):
    logits = nn.Dense(3)(nn.relu(nn.Dense(32)(features['x'])))
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return je.EstimatorSpec(mode, loss=loss, predictions=logits, optimizer=optax.adam(1e-3))

  x = np.random.RandomState(0).randn(32, 8).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  config = je.RunConfig(compilation_cache_dir=cache_dir, progress_bar=False,
                        log_step_count_steps=None)
  est = je.Estimator(model_fn, config=config)
  est.train(lambda: [({'x': x}, y)] * 2, max_steps=2)
  print(json.dumps({'hits': hits, 'jax_dir': jax.config.jax_compilation_cache_dir}))


def _run_child(cache_dir: str | None, home: str) -> dict:
  """Runs `_train_two_steps` in a fresh interpreter with `XDG_CACHE_HOME=home`."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_COMPILATION_CACHE_DIR', 'JAX_ENABLE_COMPILATION_CACHE')}
  env['XDG_CACHE_HOME'] = home
  argv = [sys.executable, __file__, _CHILD] + ([cache_dir] if cache_dir else [])
  out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, f'child exited {out.returncode}:\n{out.stderr[-3000:]}'
  return json.loads(out.stdout.strip().splitlines()[-1])


def _entries(directory) -> list[str]:
  return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def test_second_process_loads_the_steps_the_first_compiled(tmp_path):
  cache = str(tmp_path / 'cache')
  first = _run_child(cache, str(tmp_path / 'home'))
  written = _entries(cache)
  assert first['hits'] == [] and first['jax_dir'] == cache
  assert any(e.startswith('jit_train_step-') for e in written), written
  assert any(e.startswith('jit_init-') for e in written), written
  second = _run_child(cache, str(tmp_path / 'home'))
  assert {'jit_init', 'jit_train_step'} <= set(second['hits']), second


def test_no_cache_dir_writes_nothing(tmp_path):
  home = tmp_path / 'home'
  result = _run_child(None, str(home))
  assert result == {'hits': [], 'jax_dir': None}
  assert not (home / 'jestimator').exists()  # not even the default directory


@pytest.fixture
def pristine(monkeypatch):
  """JAX's cache options at their defaults and no directory chosen; restored afterwards."""
  saved = {name: getattr(jax.config, name) for name in _JAX_CACHE_OPTIONS}
  jax.config.update('jax_compilation_cache_dir', None)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  monkeypatch.setattr(compile_cache, '_in_use', None)
  monkeypatch.setattr(compile_cache, '_warned', set())
  yield
  for name, value in saved.items():
    jax.config.update(name, value)


def test_enable_sets_the_directory_and_caches_fast_compiles(pristine, tmp_path):
  compile_cache.enable_compilation_cache(tmp_path / 'a')
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'a')
  assert jax.config.jax_persistent_cache_min_compile_time_secs == \
      compile_cache.MIN_COMPILE_TIME_SECS
  assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1


def test_first_directory_wins_and_another_warns_once(pristine, tmp_path, caplog):
  compile_cache.enable_compilation_cache(str(tmp_path / 'a'))
  with caplog.at_level(logging.WARNING, logger='jestimator'):
    compile_cache.enable_compilation_cache(str(tmp_path / 'b'))
    compile_cache.enable_compilation_cache(str(tmp_path / 'b'))
    compile_cache.enable_compilation_cache(str(tmp_path / 'a'))
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'a')
  (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert f'compilation_cache_dir {tmp_path / "b"} is ignored' in warning
  assert f'already caches compiled steps in {tmp_path / "a"}' in warning


def test_directory_configured_in_jax_is_kept_with_its_settings(pristine, tmp_path, caplog):
  jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'mine'))
  with caplog.at_level(logging.DEBUG, logger='jestimator'):
    compile_cache.enable_compilation_cache(compile_cache.default_cache_dir())
  assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'mine')
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0
  messages = [r.getMessage() for r in caplog.records]
  assert f'JAX compilation cache: {tmp_path / "mine"} (configured in JAX; kept).' in messages
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the default: no ask
  caplog.clear()
  with caplog.at_level(logging.INFO, logger='jestimator'):  # asked for explicitly: a warning
    compile_cache.enable_compilation_cache(str(tmp_path / 'a'))
  (warning,) = [r.getMessage() for r in caplog.records]
  assert f'compilation_cache_dir {tmp_path / "a"} is ignored' in warning


def test_none_changes_nothing(pristine):
  compile_cache.enable_compilation_cache(None)
  assert jax.config.jax_compilation_cache_dir is None
  assert compile_cache._in_use is None


if __name__ == '__main__' and sys.argv[1:2] == [_CHILD]:
  _train_two_steps(sys.argv[2] if len(sys.argv) > 2 else None)
