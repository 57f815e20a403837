"""Warm start: a fresh model's variables initialised from another model's checkpoint."""

from __future__ import annotations

from typing import Any


def warm_start_settings(warm_start_from: Any) -> Any:
  """`warm_start_from` (a path or WarmStartSettings) validated; None stays None."""
  if warm_start_from is None:
    return None
  raise NotImplementedError('warm_start_from: being implemented')  # TODO(helper)


def warm_start(state, settings):
  """`state` (a fresh TrainState) with the selected variables copied from the source."""
  raise NotImplementedError  # TODO(helper)
