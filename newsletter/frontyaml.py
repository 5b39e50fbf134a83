"""YAML as the reader loads it: safe, bounded, and quick for the plain front matter most posts have.

Front matter and `_config.yml` are read with PyYAML's C safe loader. Two things are added. Bounds: a document
whose aliases expand past MAX_VALUES values, that nests deeper than MAX_DEPTH or that contains itself is
refused before anything is built (a few hundred bytes of nested aliases would otherwise expand to gigabytes).
Speed: a document without aliases is built by one short recursive function instead of PyYAML's generic
constructor, which makes the same values (the same constructors make every scalar that is not a string) in
about two thirds of the time; anything unusual (merge keys, sets, ordered maps, unknown tags) is left to
PyYAML's own constructor.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# What one document may grow to: values once aliases are expanded, and levels of nesting. Far beyond any real
# post or site configuration.
MAX_VALUES = 10_000
MAX_DEPTH = 64
# What a YAML value's constructor raises on a well-formed but impossible scalar (2025-02-30, hour 25, an offset
# past 24 hours, !!int on a word, a 5,000-digit number): not a YAMLError, so caught on its own.
_CONSTRUCTION_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError)

_STR, _SEQ, _MAP = "tag:yaml.org,2002:str", "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"
# The safe loader's implicit resolvers by a plain scalar's first character ("" for an empty scalar), with the
# ones for any character after them, as Resolver.resolve tries them.
_ANY = _LOADER.yaml_implicit_resolvers.get(None, [])
_RESOLVERS = {first: tuple(found + _ANY) for first, found in _LOADER.yaml_implicit_resolvers.items()
              if first is not None}


class ImpossibleValue(ValueError):
    """A well-formed scalar no value can be made of (2025-02-30, an offset of 25 hours); `line` counts from
    the document's first line as 2, as a post's front matter does after its opening `---`."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


class _Rebuild(Exception):
    """Raised inside the quick constructor for what only PyYAML's own constructor handles."""


class _Loader(_LOADER):  # type: ignore[misc, valid-type]
    """The C safe loader with Resolver.resolve without path resolvers (the safe loader has none), and the
    tags of plain scalars remembered (keys and short values repeat from post to post)."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if implicit[0]:
                tag = _RESOLVED.get(value)
                if tag is None:
                    tag = _resolve_plain(value)
                    if len(_RESOLVED) < _RESOLVED_MAX and len(value) <= 64:
                        _RESOLVED[value] = tag
                return tag
            return self.DEFAULT_SCALAR_TAG
        return self.DEFAULT_SEQUENCE_TAG if kind is SequenceNode else self.DEFAULT_MAPPING_TAG


_RESOLVED: dict[str, str] = {}
_RESOLVED_MAX = 4096


def _resolve_plain(value: str) -> str:
    for tag, regexp in _RESOLVERS.get(value[:1], _ANY):
        if regexp.match(value):
            return tag
    return _LOADER.DEFAULT_SCALAR_TAG


class _QuickLoader(_Loader):
    """For documents without aliases (no node is shared, so none needs building once and sharing)."""

    def construct_document(self, node: Node) -> Any:
        try:
            return self._build(node)
        except _Rebuild:
            return super().construct_document(node)

    def _build(self, node: Node) -> Any:
        kind, tag = node.__class__, node.tag
        if kind is ScalarNode:
            if tag == _STR:
                return node.value
            construct = self.yaml_constructors.get(tag)
            if construct is None:  # merge keys (<<) and value keys (=) too: the mapping is PyYAML's to build
                raise _Rebuild
            return construct(self, node)
        build = self._build
        if kind is SequenceNode and tag == _SEQ:
            return [build(child) for child in node.value]
        if kind is not MappingNode or tag != _MAP:
            raise _Rebuild
        mapping = {}
        for key_node, value_node in node.value:
            key = build(key_node)
            if key.__class__ is not str and not isinstance(key, Hashable):
                raise ConstructorError("while constructing a mapping", node.start_mark, "found unhashable key",
                                       key_node.start_mark)
            mapping[key] = build(value_node)
        return mapping


class _BoundedLoader(_Loader):
    """Refuses a document whose aliases expand past MAX_VALUES values, that nests deeper than MAX_DEPTH, or
    that contains itself; checked on the composed nodes, before anything is built."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_bounds(node)
        return self.construct_document(node)


def load_yaml(text: str) -> Any:
    """The document's value; raises yaml.YAMLError for bad YAML or a broken bound, ImpossibleValue for a
    scalar no value can be made of."""
    loader = _BoundedLoader(text) if _may_exceed_bounds(text) else _QuickLoader(text)
    try:
        return loader.get_single_data()
    except _CONSTRUCTION_ERRORS as err:
        raise _impossible_value(text, err) from err
    finally:
        loader.dispose()


def _may_exceed_bounds(text: str) -> bool:
    """Whether a document could break a bound: only aliases (`*name`) expand, and every level of nesting takes
    one of these characters, so most posts skip the check (and, having no alias, are built quickly)."""
    if "*" in text:
        return True
    return len(text) > MAX_DEPTH and text.count(":") + text.count("-") + text.count("[") + text.count("{") + text.count("?") > MAX_DEPTH


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return node.value if isinstance(node, SequenceNode) else []


def _check_bounds(root: Node) -> None:
    """Count values as if every alias were written out, and levels of nesting, in time linear in the nodes
    (a node an alias shares is measured once); raise a ConstructorError at the node that passes a bound."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth)
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            open_nodes.discard(id(node))
            below = [measured[id(child)] for child in _children(node)]
            values, depth = 1 + sum(v for v, _ in below), 1 + max((d for _, d in below), default=0)
            if values > MAX_VALUES:
                raise ConstructorError(
                    None, None, f"aliases expand it to more than {MAX_VALUES:,} values; write the values out",
                    node.start_mark)
            if depth > MAX_DEPTH:
                raise ConstructorError(None, None, f"nested more than {MAX_DEPTH} levels deep", node.start_mark)
            measured[id(node)] = (values, depth)
            continue
        if id(node) in measured:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise ConstructorError(
                    None, None, "an alias refers to a value that contains it, so the value never ends",
                    child.start_mark)
            stack.append((child, False))


def _impossible_value(text: str, err: Exception) -> ImpossibleValue:
    """Name the scalar a constructor refused (the error itself says neither which nor where)."""
    loader = _LOADER(text)
    try:
        stack = [loader.get_single_node()]
        while stack:
            node = stack.pop()
            if node is None:
                continue
            if isinstance(node, ScalarNode):
                try:
                    loader.construct_object(node)
                except _CONSTRUCTION_ERRORS as bad:
                    kind = "date" if node.tag.endswith(":timestamp") else "value"
                    reason = str(bad) if isinstance(bad, ValueError) else f"not a valid {node.tag.rsplit(':')[-1]}"
                    if "offset must be a timedelta" in reason:
                        reason = "the offset from UTC must be less than 24 hours"
                    shown = node.value if len(node.value) <= 40 else node.value[:40] + "..."
                    message = f"invalid {kind} {shown!r} in front matter: {reason}"
                    return ImpossibleValue(message, node.start_mark.line + 2)
            stack.extend(reversed(_children(node)))
    finally:
        loader.dispose()
    return ImpossibleValue(f"invalid YAML front matter: {err}")
