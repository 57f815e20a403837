"""What identifies an input: a stable hash saved with its position.

A saved input position is a claim about one input. It is restored only into
an input with the same fingerprint; any other input starts at its own first
element. For a `tf.data.Dataset` the fingerprint hashes the dataset's
serialized graph (constants included), made independent of what TF renames
on every trace: functions and nodes get canonical order-of-use names; `metadata`
attributes, py_func tokens and resource-name counters are dropped. For other
iterables it hashes the input_fn's qualified name, the source type and the
first element (structure, shapes without the batch dimension, dtypes, values).
"""

from __future__ import annotations

import collections
import hashlib
import re
from typing import Any, Callable, Mapping

import numpy as np

from jestimator.tf_import import tf

_PY_FUNC_OPS = {'PyFunc', 'PyFuncStateless', 'EagerPyFunc'}


def _strip(nodes) -> None:
  for node in nodes:
    if 'metadata' in node.attr:
      del node.attr['metadata']
    if node.op in _PY_FUNC_OPS and 'token' in node.attr:
      del node.attr['token']
    if 'value' in node.attr:  # resource handles (seed generators) get unique names
      for handle in node.attr['value'].tensor.resource_handle_val:
        handle.name = re.sub(r'_\d+$', '', handle.name)


def dataset_fingerprint(dataset: tf.data.Dataset) -> str:
  """sha256 of the dataset's graph, stable across rebuilds of the same pipeline."""
  from tensorflow.core.framework import graph_pb2  # pylint: disable=import-outside-toplevel
  policy = tf.data.experimental.ExternalStatePolicy.IGNORE
  graph = graph_pb2.GraphDef()
  graph.ParseFromString(dataset._as_serialized_graph(external_state_policy=policy).numpy())  # pylint: disable=protected-access
  _strip(graph.node)
  _rename_nodes(graph.node)
  for function in graph.library.function:
    _strip(function.node_def)
  functions = {f.signature.name: f for f in graph.library.function}
  order = _reachable(graph.node, functions)
  order += sorted(set(functions) - set(order))  # unreferenced (none expected)
  canonical = {name: f'fn{i}' for i, name in enumerate(order)}
  _rename(graph.node, canonical)
  for function in graph.library.function:
    function.signature.name = canonical[function.signature.name]
    _rename(function.node_def, canonical)
  library = sorted(graph.library.function, key=lambda f: int(f.signature.name[2:]))
  del graph.library.function[:]
  graph.library.function.extend(library)
  data = graph.SerializeToString(deterministic=True)
  return 'tf.data:' + hashlib.sha256(data).hexdigest()


def _functions_used(nodes) -> list[str]:
  names = []
  for node in nodes:
    for key in sorted(node.attr):
      value = node.attr[key]
      if value.HasField('func'):
        names.append(value.func.name)
      names.extend(f.name for f in value.list.func)
  return names


def _rename_nodes(nodes) -> None:
  """Graph nodes get names n<i> in order: TF numbers some (tables, seeds) per process."""
  names = {node.name: f'n{i}' for i, node in enumerate(nodes)}

  def new(ref: str) -> str:
    control, ref = ('^', ref[1:]) if ref.startswith('^') else ('', ref)
    name, colon, port = ref.partition(':')
    return control + names.get(name, name) + colon + port

  for node in nodes:
    node.name = names[node.name]
    node.input[:] = [new(i) for i in node.input]


def _rename(nodes, canonical: dict[str, str]) -> None:
  for node in nodes:
    for value in node.attr.values():
      if value.HasField('func') and value.func.name in canonical:
        value.func.name = canonical[value.func.name]
      for f in value.list.func:
        if f.name in canonical:
          f.name = canonical[f.name]


def _reachable(nodes, functions) -> list[str]:
  """Function names in order of first use, depth first from the graph's nodes."""
  order, seen = [], set()

  def visit(names):
    for name in names:
      if name in functions and name not in seen:
        seen.add(name)
        order.append(name)
        visit(_functions_used(functions[name].node_def))

  visit(_functions_used(nodes))
  return order


def _nest(x: Any) -> tuple[Any, list]:
  """(`x` with every leaf 0, its leaves) as tf.nest's `map_structure(lambda _: 0, x)` and
  `flatten(x)` give them: mappings, lists, tuples and namedtuples are nested (a mapping keeps
  its key order, its leaves come in sorted key order), anything else is a leaf. Written out so
  that a numpy input's fingerprint needs no TensorFlow and matches those saved before."""
  if isinstance(x, Mapping):
    parts = {key: _nest(value) for key, value in x.items()}
    pairs = [(key, parts[key][0]) for key in x]
    layout = (type(x)(x.default_factory, pairs) if isinstance(x, collections.defaultdict)
              else type(x)(pairs))
    return layout, [leaf for key in sorted(x) for leaf in parts[key][1]]
  if isinstance(x, (list, tuple)):
    parts = [_nest(value) for value in x]
    children = [layout for layout, _ in parts]
    layout = type(x)(*children) if hasattr(x, '_fields') else type(x)(children)
    return layout, [leaf for _, leaves in parts for leaf in leaves]
  return 0, [x]


def _structure(element: Any) -> str:
  layout, leaves = _nest(element)
  specs = [(np.shape(x)[1:], str(getattr(x, 'dtype', type(x).__name__))) for x in leaves]
  return f'{layout}|{specs}'


def _content(element: Any) -> bytes:
  """The first element's bytes (numeric leaves; strings by value): tells data apart."""
  digest = hashlib.sha256()
  for leaf in _nest(element)[1]:
    array = np.asarray(leaf)
    digest.update(array.tobytes() if array.dtype.kind not in 'OSU' else repr(array).encode())
  return digest.digest()


def iterable_fingerprint(input_fn: Callable, source: Any, first: Any,
                         kind: str = 'iterable') -> str:
  """sha256 of input_fn's qualified name, the source type, the first element's layout
  and its values."""
  name = f'{getattr(input_fn, "__module__", "")}.{getattr(input_fn, "__qualname__", input_fn)}'
  text = f'{name}|{type(source).__qualname__}|{_structure(first)}'
  return f'{kind}:' + hashlib.sha256(text.encode() + _content(first)).hexdigest()
