"""Host transforms: TF work that must happen where strings live, before JAX.

JAX sees dense numbers only. A `HostTransform` turns raw inputs into them
inside the tf.data pipeline that the Estimator builds around every input_fn
(`transform`, TF ops, run in `dataset.map`), and turns predictions back into
user values after the device is done (`postprocess`, numpy, in `predict`).
Feature columns' string/hash ops and a head's label vocabulary are both this.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax

from jestimator.tf_import import maybe_tf, tf


class HostTransform:
  """Base class: identity on both sides; override what you need."""

  def transform(self, features: Any, labels: Any, mode: str) -> tuple[Any, Any]:
    """TF ops on one batch `(features, labels)` (labels may be None)."""
    return features, labels

  def postprocess(self, predictions: Any) -> Any:
    """numpy predictions of one batch -> what `predict` yields."""
    return predictions


def apply_to_dataset(dataset: tf.data.Dataset, transforms: Sequence[HostTransform],
                     mode: str) -> tf.data.Dataset:
  """`dataset.map` of every transform, in order, on whole batches, keeping element order.

  The transforms are plain TF ops, so the map skips autograph's conversion
  (`do_not_convert`): that cuts the first trace of a feature-column transform
  from seconds to a fraction of one, on every input_fn call.
  """

  def fn(*element):
    if len(element) == 2:
      features, labels = element
    else:
      (features,), labels = element, None
    for t in transforms:
      features, labels = t.transform(features, labels, mode)
    return features if labels is None else (features, labels)

  return dataset.map(tf.autograph.experimental.do_not_convert(fn),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def apply_to_batch(element: Any, transforms: Sequence[HostTransform], mode: str) -> Any:
  """The same, eagerly, for one batch of a plain Python iterable (numpy out)."""
  features, labels = element if isinstance(element, tuple) and len(element) == 2 else (
      element, None)
  for t in transforms:
    features, labels = t.transform(features, labels, mode)
  tf_module = maybe_tf()  # not imported: no transform made tensors, all is numpy already
  if tf_module is not None:
    to_numpy = lambda x: x.numpy() if isinstance(x, tf_module.Tensor) else x
    features, labels = jax.tree.map(to_numpy, features), jax.tree.map(to_numpy, labels)
  return features if labels is None else (features, labels)
