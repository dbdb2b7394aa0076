"""YAML documents with positions: the first stage of loading, before any Istio semantics.

PyYAML's `safe_load` forgets where values came from, and diagnostics need the line of every field. So we
compose the node graph (`yaml.compose_all`, which keeps start marks) and convert it to plain Python values
ourselves, recording for every mapping key and sequence item the 1-based line it starts on. Scalars are
still converted by PyYAML's SafeConstructor, so `80` is an int and `true` a bool exactly as in `safe_load`.

Problems found here (duplicate keys, non-scalar keys, alias bombs, deep nesting, explicit tags such as
`!!int x` or `!custom x`, values PyYAML cannot construct such as `2001-02-30`) are attached to the
document rather than raised; the loader turns them into diagnostics once it knows the object's kind and
name. A syntax error ends the file: documents before it are kept, as they parsed fine.

That composing is the exact path (`parse_documents_exact`), and the slow one: most policy files are
plain text on which yaml-rs reads the same values several times faster (plain_yaml.py decides which), so
`parse_documents` takes that way for them and composes a file only when one of its field positions is
first asked for (a diagnostic's line), through `_LazyPositions`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from controlplane.api.diagnostics import FieldPath
from controlplane.api.plain_yaml import read_plain

_BASE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Distinct plain scalars a `TagMemo` remembers; past this it starts afresh (a hostile file of unique values
# must not grow memory without bound).
TAG_MEMO_MAX = 50_000
# (scalar text, implicit flags) → the tag PyYAML's resolver gives it. The resolver's regular expressions
# were a sixth of loading and policy repeats the same keys and values, so callers that parse many files
# (the policy store) keep one memo across them; the resolver is a pure function of the text, so a memo
# never changes a result.
TagMemo = dict[tuple[str, object], str]


def _resolve_scalar(memo: TagMemo, value: str, implicit: object) -> str:
    key = (value, implicit)
    tag = memo.get(key)
    if tag is None:
        if len(memo) >= TAG_MEMO_MAX:
            memo.clear()
        tag = memo[key] = str(_RESOLVER.resolve(ScalarNode, value, implicit))
    return tag


class _Loader(_BASE_LOADER):  # type: ignore[valid-type,misc]
    """The safe loader (libyaml's when present, ~10x faster; both keep node marks), resolving scalars'
    tags through a `TagMemo` (the composer resolves every scalar's tag)."""

    memo: TagMemo

    def resolve(self, kind: type[Node], value: object, implicit: object) -> object:
        if kind is ScalarNode and isinstance(value, str) and not self.yaml_path_resolvers:
            return _resolve_scalar(self.memo, value, implicit)
        return super().resolve(kind, value, implicit)


def _compose_all(text: str, memo: TagMemo) -> Iterator[Node | None]:
    """`yaml.compose_all` with our loader and its memo."""
    loader = _Loader(text)
    loader.memo = memo
    try:
        while loader.check_node():
            yield loader.get_node()
    finally:
        loader.dispose()


# Aliases are expanded while converting, so `&a [*a, *a, ...]` nesting can grow exponentially ("billion
# laughs"). Policy documents are small; anything this large is an attack or a mistake.
MAX_NODES_PER_DOCUMENT = 200_000
# Nodes reached a second time (through an alias): merge keys and shared snippets repeat a few; a bomb
# repeats millions, and walking even the first 200,000 costs half a second per document.
MAX_ALIAS_EXPANSION = 10_000
# Deeper than any policy object (Istio's are < 15 levels); converting is recursive.
MAX_DEPTH = 64
# The Python composer recurses per nesting level too (and libyaml's binding does in C): deeper flow or
# block nesting than this is refused before composing, with a margin under Python's recursion limit.
MAX_TEXT_DEPTH = 200

_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_STR_TAG = "tag:yaml.org,2002:str"
_RESOLVER = yaml.resolver.Resolver()


@dataclass(frozen=True)
class Source:
    """Where an object came from: its file, its first line, and the line of each field inside it."""

    file: str
    line: int
    positions: Mapping[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int:
        """Line of the field at `path`, or of its nearest ancestor that exists (a missing field is
        reported where its parent is)."""
        while path:
            line = self.positions.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return self.line


@dataclass(frozen=True)
class YamlProblem:
    """A structural problem inside a document, found before the object was decoded."""

    path: FieldPath
    line: int
    message: str


@dataclass(frozen=True)
class Document:
    """One YAML document as plain Python data plus the positions of its fields."""

    source: Source
    data: object
    problems: tuple[YamlProblem, ...] = ()


@dataclass(frozen=True)
class SyntaxProblem:
    """A YAML syntax error: it ends the file at `line`."""

    line: int
    message: str


_END = object()


class _DocumentTooLarge(Exception):
    pass


class _Converter:
    """Walks one document's node graph into Python values, recording positions and problems."""

    def __init__(self, memo: TagMemo) -> None:
        # A fresh constructor per document: SafeConstructor caches every node it has seen.
        self._constructor = SafeConstructor()
        self._memo = memo
        self.positions: dict[FieldPath, int] = {}
        self.problems: list[YamlProblem] = []
        self._nodes = 0
        self._seen: set[int] = set()
        self._repeats = 0
        self._active: set[int] = set()

    def convert(self, node: Node, path: FieldPath) -> object:
        self._nodes += 1
        if self._nodes > MAX_NODES_PER_DOCUMENT or len(path) > MAX_DEPTH:
            raise _DocumentTooLarge
        if id(node) in self._seen:
            self._repeats += 1
            if self._repeats > MAX_ALIAS_EXPANSION:
                raise _DocumentTooLarge
        else:
            self._seen.add(id(node))
        if type(node) is ScalarNode:
            # most nodes: checked here without the general path's calls (same result as below)
            tag = node.tag
            if tag == _STR_TAG and node.style:
                return node.value  # quoted or block: a str, never an explicit tag
            if node.style or tag != _resolve_scalar(self._memo, node.value, (True, False)):
                self.problems.append(YamlProblem(path, _line(node), f"YAML tags are not supported ({tag})"))
                return None
            return node.value if tag == _STR_TAG else self._scalar(node, path)
        if _explicit_tag(node, self._memo):
            # Policy is plain data: a tag either names a Python type or hides a type change (`!!str 80`).
            self.problems.append(YamlProblem(path, _line(node), f"YAML tags are not supported ({node.tag})"))
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            # Only aliases can make the graph cyclic; a cycle has no finite Python value.
            self.problems.append(YamlProblem(path, _line(node), "recursive YAML alias"))
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            return None
        finally:
            self._active.discard(id(node))

    def _scalar(self, node: ScalarNode, path: FieldPath) -> object:
        if node.tag == _STR_TAG:
            return node.value  # what SafeConstructor.construct_yaml_str returns, without its calls
        try:
            return self._constructor.construct_object(node, deep=True)
        except Exception as err:  # e.g. the timestamp 2001-02-30 (ValueError), which safe_load raises
            self.problems.append(YamlProblem(path, _line(node), f"invalid value {node.value!r}: {err}"))
            return None

    def _sequence(self, node: SequenceNode, path: FieldPath) -> list[object]:
        items: list[object] = []
        for index, item in enumerate(node.value):
            item_path = (*path, index)
            self.positions[item_path] = _line(item)
            items.append(self.convert(item, item_path))
        return items

    def _mapping(self, node: MappingNode, path: FieldPath) -> dict[object, object]:
        # Resolves `<<: *anchor` merge keys in place, the way safe_load does.
        try:
            self._constructor.flatten_mapping(node)
        except yaml.constructor.ConstructorError as err:  # `<<: x`: only mappings merge
            self.problems.append(YamlProblem(path, _line(node), f"invalid merge key (<<): {err.problem}"))
            return {}
        result: dict[object, object] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problems.append(YamlProblem(path, _line(key_node), "mapping keys must be scalars"))
                continue
            if _explicit_tag(key_node, self._memo):
                self.problems.append(YamlProblem(path, _line(key_node), "YAML tags are not supported"))
                continue
            key = self._scalar(key_node, path)
            segment = key if isinstance(key, str) else str(key)
            key_path = (*path, segment)
            if key in result:
                # Kubernetes rejects duplicate keys too; silently taking the last one hides typos.
                self.problems.append(YamlProblem(key_path, _line(key_node), f"duplicate key {segment!r}"))
                continue
            self.positions[key_path] = _line(key_node)
            result[key] = self.convert(value_node, key_path)
        return result


def _explicit_tag(node: Node, memo: TagMemo) -> bool:
    """Whether the node's tag was written (`!!int`, `!custom`) rather than resolved from the value."""
    if isinstance(node, SequenceNode):
        return bool(node.tag != _SEQ_TAG)
    if isinstance(node, MappingNode):
        return bool(node.tag != _MAP_TAG)
    if isinstance(node, ScalarNode) and not node.style:
        # a plain scalar (style "" from libyaml, None from PyYAML): the tag the resolver gives its text
        return bool(node.tag != _resolve_scalar(memo, node.value, (True, False)))
    return bool(node.tag != _STR_TAG)


_BRACKETS = re.compile(r"[\[\]{}]")
_INDENT = re.compile(r"^[ -]*", re.MULTILINE)


def _text_depth(text: str) -> int:
    """An upper bound of the nesting of flow collections (`[[[`, `{{`) and of indentation levels; cheap,
    so that a hostile file is refused before the recursive composer sees it."""
    depth = deepest = 0
    if text.count("[") + text.count("{") > MAX_TEXT_DEPTH:  # else no deeper than that: skip the walk
        for match in _BRACKETS.finditer(text):
            if match.group() in "[{":
                depth += 1
                deepest = max(deepest, depth)
            else:
                depth = max(depth - 1, 0)
    indent = max((len(prefix) for prefix in _INDENT.findall(text)), default=0)
    return max(deepest, indent // 2)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def parse_documents(
    file: str, text: str, memo: TagMemo | None = None
) -> tuple[list[Document], SyntaxProblem | None]:
    """Every non-empty document of a YAML stream, and the syntax error that ended it, if any. `memo`: see
    `TagMemo` (a fresh one per call when not given).

    Text that yaml-rs and PyYAML read alike (plain_yaml.py says which) is read by yaml-rs, with each
    document's field positions found by `parse_documents_exact` when first asked for; any other text is
    composed by PyYAML. Both give equal documents (tests/unit/test_plain_yaml.py)."""
    memo = {} if memo is None else memo
    plain = read_plain(text)
    if plain is None:
        return parse_documents_exact(file, text, memo)
    reparse = _Reparse(file, text, memo)
    return [Document(Source(file, line, _LazyPositions(reparse, index)), data)
            for index, (line, data) in enumerate(plain)], None


class _Reparse:
    """A file read by the fast path, composed again by PyYAML only when a position is asked for."""

    __slots__ = ("_memo", "_positions", "file", "text")

    def __init__(self, file: str, text: str, memo: TagMemo) -> None:
        self.file = file
        self.text = text
        self._memo = memo
        self._positions: list[Mapping[FieldPath, int]] | None = None  # per document; not their data

    def positions(self, index: int) -> Mapping[FieldPath, int]:
        if self._positions is None:
            documents = parse_documents_exact(self.file, self.text, self._memo)[0]
            self._positions = [document.source.positions for document in documents]
        return self._positions[index] if index < len(self._positions) else {}


class _LazyPositions(Mapping[FieldPath, int]):
    """`Source.positions` of a document read by the fast path (see `parse_documents`)."""

    __slots__ = ("_found", "_index", "_reparse")

    def __init__(self, reparse: _Reparse, index: int) -> None:
        self._reparse = reparse
        self._index = index
        self._found: Mapping[FieldPath, int] | None = None

    def _positions(self) -> Mapping[FieldPath, int]:
        if self._found is None:
            self._found = self._reparse.positions(self._index)
        return self._found

    def __getitem__(self, path: FieldPath) -> int:
        return self._positions()[path]

    def __iter__(self) -> Iterator[FieldPath]:
        return iter(self._positions())

    def __len__(self) -> int:
        return len(self._positions())

    def __eq__(self, other: object) -> bool:
        # the same document of the same text has the same positions: equal without composing either
        if isinstance(other, _LazyPositions) and self._index == other._index and \
                self._reparse.file == other._reparse.file and self._reparse.text == other._reparse.text:
            return True
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # like the dict it stands for


def parse_documents_exact(
    file: str, text: str, memo: TagMemo | None = None
) -> tuple[list[Document], SyntaxProblem | None]:
    """`parse_documents` by PyYAML's composer alone: every field's position and every structural problem
    (the reference the fast path is tested against)."""
    memo = {} if memo is None else memo
    documents: list[Document] = []
    if _text_depth(text) > MAX_TEXT_DEPTH:
        return documents, SyntaxProblem(1, f"nested too deeply (more than {MAX_TEXT_DEPTH} levels)")
    nodes = _compose_all(text, memo)
    while True:
        try:
            node = next(nodes, _END)
        except RecursionError:
            return documents, SyntaxProblem(1, "nested too deeply")
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            line = int(mark.line) + 1 if mark is not None else 1
            return documents, SyntaxProblem(line, _syntax_message(err))
        except yaml.YAMLError as err:
            return documents, SyntaxProblem(1, f"invalid YAML: {err}")
        except UnicodeEncodeError as err:  # a lone surrogate (not from a file: those are decoded strictly)
            return documents, SyntaxProblem(1, f"invalid text: {err.reason}")
        if node is _END:
            return documents, None
        if isinstance(node, Node):
            documents.append(_document(file, node, memo))


def _document(file: str, node: Node, memo: TagMemo) -> Document:
    converter = _Converter(memo)
    line = _line(node)
    try:
        data = converter.convert(node, ())
    except (_DocumentTooLarge, RecursionError):
        problem = YamlProblem((), line, "document too large, too deeply nested or too many aliases")
        return Document(Source(file, line), None, (problem,))
    return Document(Source(file, line, converter.positions), data, tuple(converter.problems))


def _syntax_message(err: yaml.MarkedYAMLError) -> str:
    parts = [part for part in (err.context, err.problem) if part]
    return "invalid YAML: " + (", ".join(parts) if parts else str(err))
