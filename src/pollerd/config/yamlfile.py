"""A YAML file read with ``${VAR}`` substitution and the source line of every key and item.

Substitution happens on the text, before YAML parsing (DESIGN §3):

- ``${NAME}`` is replaced by the variable's value; an unset variable is an error naming it and
  its line.
- ``${NAME:-default}`` uses ``default`` when the variable is unset or empty (as in the shell).
- ``$${`` writes a literal ``${`` (``$${NAME}`` becomes the text ``${NAME}``).
- Full-line comments are left alone, so a commented-out line may name an unset variable.

The value is inserted as text: quote it in the YAML (``token: "${TOKEN}"``) when it may contain
characters YAML treats specially. Line numbers always refer to the file as written, even when a
value spans several lines.

The file may hold at most ``MAX_FILE_BYTES``; nesting and aliases are limited before any node is
built (``pollerd.config.yamlshape``), so that a hostile or careless file costs an error message
instead of the process.

A reload of a large file builds only the jobs whose text changed: ``parse_yaml`` skips the items
of ``jobs`` whose source (column and text) the caller already knows.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pollerd.config.yamlshape import MAX_DEPTH, ShapeError, check_shape
from pollerd.config.yamlsource import ITEMS_KEY, ItemSources, ItemSpans, Source
from pollerd.errors import ConfigError

logger = logging.getLogger(__name__)

Loc = tuple[str | int, ...]

_REFERENCE = re.compile(r"\$(\$)?\{([^}\n]*)(\})?")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.DOTALL)
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
# Mapping keys the index builds itself; other tags (a merge key, '=') take PyYAML's whole path.
_PLAIN_KEY_TAGS = frozenset(
    {_STR_TAG, "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:bool"}
    | {"tag:yaml.org,2002:null"}
)
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"

__all__ = [  # MAX_DEPTH: the limits live in yamlshape
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "REUSED",
    "Loc",
    "Source",
    "YamlDocument",
    "parse_yaml",
    "read_text",
    "read_yaml",
    "substitute_env",
]

MAX_FILE_BYTES = 32 * 1024 * 1024


class _Reused:
    """The data of an item that ``parse_yaml`` left unbuilt: the caller knows its source."""

    def __repr__(self) -> str:
        return "REUSED"


REUSED: Any = _Reused()


@dataclass(frozen=True)
class YamlDocument:
    """The parsed data, the line of every mapping key and sequence item, and per-node problems."""

    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    # Problems found while indexing (duplicate keys): (where, line, message).
    problems: tuple[tuple[Loc, int, str], ...] = ()
    # The source of each item of the top-level ``jobs`` that holds no alias or anchor, by
    # position; items whose source the caller knew are REUSED in ``data``, with no lines under.
    sources: Mapping[int, Source] = field(default_factory=dict)
    reused: int = 0

    def line_of(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor that has one (1 for the document)."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return 1


def read_yaml(path: Path, environ: Mapping[str, str], source: str) -> YamlDocument:
    """Read, substitute and parse ``path``; ``source`` is how messages name the file.

    Raises ``ConfigError`` when the file cannot be read, names unset variables, or is not YAML.
    """
    text, line_map = read_text(path, environ, source)
    return parse_yaml(text, source, line_map)


def read_text(path: Path, environ: Mapping[str, str], source: str) -> tuple[str, list[int]]:
    """The text of ``path`` with variables substituted, and the line in the file of each of its
    lines (see ``substitute_env``). Raises ``ConfigError`` as ``read_yaml``."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(
                f"{source}: the file is larger than {_size(MAX_FILE_BYTES)}; a pollers.yaml this "
                "large is not one an operator wrote: check that it is the right file"
            )
        text = raw.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: no such file; create it or pass another one with -c"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: the file is not UTF-8 text ({exc.reason})") from None
    return substitute_env(text, environ, source)


def _size(count: int) -> str:
    return f"{count // (1024 * 1024)} MiB" if count >= 1024 * 1024 else f"{count // 1024} KiB"


def substitute_env(text: str, environ: Mapping[str, str], source: str) -> tuple[str, list[int]]:
    """Replace variable references; return the text and, per output line, its line in ``text``.

    Raises ``ConfigError`` listing every unset variable and malformed reference.
    """
    problems: list[str] = []
    out: list[str] = []
    line_map: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if "$" in line and not line.lstrip().startswith("#"):
            line = _substitute_line(line, number, environ, source, problems)
        out.append(line)
        line_map.extend([number] * (line.count("\n") + 1))
    if problems:
        raise ConfigError(problems)
    return "\n".join(out), line_map


def _substitute_line(
    line: str, number: int, environ: Mapping[str, str], source: str, problems: list[str]
) -> str:
    def replace(match: re.Match[str]) -> str:
        escaped, inner, closed = match.groups()
        if escaped:
            return match.group(0)[1:]
        if not closed:
            problems.append(
                f"{source}:{number}: '${{' without a closing '}}'; write $${{ for a '$'"
            )
            return match.group(0)
        variable = _VARIABLE.fullmatch(inner)
        if variable is None:
            problems.append(
                f"{source}:{number}: invalid reference '${{{inner}}}': "
                "expected ${NAME} or ${NAME:-default}"
            )
            return match.group(0)
        name, default = variable.groups()
        value = environ.get(name)
        if default is not None:
            return value if value else default
        if value is None:
            problems.append(
                f"{source}:{number}: environment variable {name!r} is not set; "
                f"set it or write ${{{name}:-default}}"
            )
            return match.group(0)
        return value

    return _REFERENCE.sub(replace, line)


# libyaml's parser when PyYAML was built with it (its wheels are): 5-10x faster on large files.
_BaseLoader = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader that keeps an impossible timestamp (2025-13-01) as a string for the validator."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._resolved: dict[tuple[str, tuple[bool, bool]], str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        """The tag of a node; a plain scalar's is cached by its text (most values repeat)."""
        if kind is not ScalarNode:
            return super().resolve(kind, value, implicit)
        key = (value, implicit)
        tag = self._resolved.get(key)
        if tag is None:
            tag = self._resolved[key] = super().resolve(kind, value, implicit)
        return tag

    def construct_lenient_timestamp(self, node: Node) -> Any:
        try:
            return SafeConstructor.construct_yaml_timestamp(self, node)  # type: ignore[arg-type]
        except ValueError:
            return self.construct_scalar(node)


_Loader.add_constructor(_TIMESTAMP_TAG, _Loader.construct_lenient_timestamp)


def parse_yaml(
    text: str,
    source: str,
    line_map: list[int] | None = None,
    known: Container[Source] | None = None,
) -> YamlDocument:
    """Parse one YAML document and index its lines. Raises ``ConfigError`` on malformed YAML.

    With ``known`` (a reader that keeps the jobs of its loads), the document notes the source of
    each item of the top-level ``jobs``; one whose source is in ``known`` is neither composed nor
    built: its data is REUSED (a reload that changed one job of 10,000 builds one). Only an item
    that holds no alias or anchor has a source (``pollerd.config.yamlsource``); none has one
    under a ``%TAG`` directive, or when a substituted value spans lines (an item's lines would
    not move with it).
    """
    lines = line_map or []

    def original(line: int) -> int:
        return lines[line - 1] if 0 < line <= len(lines) else line

    sourced = known is not None and (not lines or lines[-1] == len(lines))
    spans = ItemSpans() if sourced else None
    items: ItemSources | None = None
    try:
        shape = check_shape(text, spans)
        if known is not None and spans is not None and spans.usable and not shape.directives:
            items = ItemSources(text, spans.spans, (shape.aliases, shape.anchors), known)
        if items is not None and items.reused:
            # Not expected to fail: if it does, the whole file is read again, none reused.
            return _reusing(items, original) or parse_yaml(text, source, line_map, ())
        data, index = _compose(text, original)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = original(mark.line + 1) if mark is not None else 1
        what = ", ".join(part for part in (exc.problem, exc.context) if part)
        raise ConfigError(f"{source}:{line}: malformed YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}:1: malformed YAML: {exc}") from None
    except _RecursiveAliasError as exc:
        raise ConfigError(f"{source}:{exc.line}: a YAML alias refers to itself") from None
    except ShapeError as exc:
        raise ConfigError(f"{source}:{original(exc.line)}: {exc.message}") from None
    found = items.found if items is not None else {}
    return YamlDocument(data, index.lines, tuple(index.problems), found)


def _reusing(items: ItemSources, original: Any) -> YamlDocument | None:
    """The document with the items the caller knows written as ``~``; None if composing it
    failed or did not give them back where the parse events said they are."""
    try:
        data, index = _compose(items.reduced(), original, items.reused)
    except (yaml.YAMLError, _RecursiveAliasError):
        return None
    if index.reused != len(items.reused):
        return None
    return YamlDocument(data, index.lines, tuple(index.problems), items.found, index.reused)


def _compose(text: str, original: Any, reused: Collection[int] = ()) -> tuple[Any, _LineIndex]:
    """The data of ``text`` and its line index; the items of ``jobs`` at ``reused`` are REUSED."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        index = _LineIndex(original, loader, reused)
        return (index.build(node, ()) if node is not None else None), index
    finally:
        loader.dispose()


class _RecursiveAliasError(Exception):
    def __init__(self, line: int) -> None:
        self.line = line
        super().__init__(line)


class _LineIndex:
    """Walks the node graph once: records the line of each key and item and builds the data.

    Plain mappings (scalar keys, no merge key) and sequences are built here, which costs half
    of PyYAML's constructor walking the graph a second time; scalars other than strings, and
    any other collection (``<<`` merges, ``!!set``, ``!!omap``), are built by the loader.
    """

    def __init__(self, original: Any, loader: Any, reused: Collection[int] = ()) -> None:
        self._original = original
        self._loader = loader
        self._reused = frozenset(reused)  # positions in ``jobs`` written as ``~``: REUSED
        self.reused = 0
        self._on_path: set[int] = set()
        self._built: dict[int, Any] = {}  # id(collection node) -> its data: aliases share it
        self.lines: dict[Loc, int] = {}
        self.problems: list[tuple[Loc, int, str]] = []

    def build(self, node: Node, loc: Loc) -> Any:
        """The data of ``node``, as the loader would construct it, with its lines recorded."""
        if isinstance(node, ScalarNode):
            return node.value if node.tag == _STR_TAG else self._loader.construct_object(node)
        key = id(node)
        if key in self._built:  # an alias: the same data, and its lines under this path too
            self.visit(node, loc)
            return self._built[key]
        if not _plain(node):
            self.visit(node, loc)
            data = self._loader.construct_object(node, deep=True)
        else:
            if key in self._on_path:
                raise _RecursiveAliasError(self._original(node.start_mark.line + 1))
            self._on_path.add(key)
            if isinstance(node, MappingNode):
                data = self._build_mapping(node, loc)
            else:
                data = self._build_sequence(node, loc)
            self._on_path.discard(key)
        self._built[key] = data
        return data

    def _build_sequence(self, node: Node, loc: Loc) -> list[Any]:
        reused = self._reused if loc == (ITEMS_KEY,) else frozenset()
        data: list[Any] = []
        for position, item in enumerate(node.value):
            self.lines[(*loc, position)] = self._original(item.start_mark.line + 1)
            if position in reused:
                data.append(REUSED)
                self.reused += 1
            else:
                data.append(self.build(item, (*loc, position)))
        return data

    def _build_mapping(self, node: MappingNode, loc: Loc) -> dict[Any, Any]:
        data: dict[Any, Any] = {}
        first_seen: dict[str, int] = {}
        for key, value in node.value:
            name = str(key.value)
            self._key_line(key, name, loc, first_seen)
            data[self.build(key, loc)] = self.build(value, (*loc, name))
        return data

    def _key_line(self, key: Node, name: str, loc: Loc, first_seen: dict[str, int]) -> None:
        line = self._original(key.start_mark.line + 1)
        if name in first_seen:
            message = f"duplicate key {name!r} (first set at line {first_seen[name]})"
            self.problems.append(((*loc, name), line, message))
        else:
            first_seen[name] = line
            self.lines[(*loc, name)] = line

    def visit(self, node: Node, loc: Loc) -> None:
        """Record the lines under ``node`` without building its data."""
        if isinstance(node, ScalarNode):
            return
        if id(node) in self._on_path:
            raise _RecursiveAliasError(self._original(node.start_mark.line + 1))
        self._on_path.add(id(node))
        if isinstance(node, MappingNode):
            self._visit_mapping(node, loc)
        elif isinstance(node, SequenceNode):
            for position, item in enumerate(node.value):
                self.lines[(*loc, position)] = self._original(item.start_mark.line + 1)
                self.visit(item, (*loc, position))
        self._on_path.discard(id(node))

    def _visit_mapping(self, node: MappingNode, loc: Loc) -> None:
        first_seen: dict[str, int] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG or not isinstance(key, ScalarNode):
                continue  # merged keys keep the lines of their anchor
            name = str(key.value)
            self._key_line(key, name, loc, first_seen)
            self.visit(value, (*loc, name))


def _plain(node: Node) -> bool:
    """A mapping of scalar keys without merges, or a sequence: built by ``_LineIndex``."""
    if isinstance(node, SequenceNode):
        return node.tag == _SEQ_TAG
    return node.tag == _MAP_TAG and all(
        isinstance(key, ScalarNode) and key.tag in _PLAIN_KEY_TAGS for key, _ in node.value
    )
