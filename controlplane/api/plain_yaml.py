"""The fast way to read a policy file: yaml-rs, for text on which it and PyYAML cannot disagree.

PyYAML (YAML 1.1, what `documents.py` composes node by node to keep every field's line) is the reference:
`80` is an int, `yes` a bool, `0755` octal, `2001-02-03` a date, exactly as `safe_load` reads them. It is
also most of a startup: at 5,000 services, composing and converting the nodes took about two thirds of
loading the directory. yaml-rs (a Rust YAML 1.2 parser) builds the same plain values about eight times
faster but reads some scalars differently (`yes`, `on`, `0755`, `08`, `1e3`, `+.5`, dates; see
tests/unit/test_plain_yaml.py), has no positions and no notion of our structural problems (tags,
aliases, duplicate keys).

So `read_plain` takes the fast path only for text that cannot tell the two apart, and says None for any
other (documents.py then composes it as before; a file is read one way or the other, never mixed):

- ASCII without tabs, carriage returns, control characters or backslashes (escapes differ between YAML
  1.1 and 1.2), and small and shallow enough that no node or depth limit of the exact path can be
  reached (yaml-rs has no depth limit: 15,000 nested sequences crashed the process);
- no tags, anchors, aliases, merge keys, directives, complex keys, block scalars, `...` or `--- content`;
- every plain word (the text split at whitespace and flow indicators, quoted text and trailing comments
  included, which only makes the check stricter; whole-line comments left out where that cannot hide a
  plain word, see `_judged_text`) is one whose meaning both parsers agree on: text that no YAML 1.2
  reader takes for a number or a date, or `true`/`false`/`null`, decimal integers and simple decimals;
- none of the flow-collection corners where they differ: a quoted key glued to its value (`{"a":yes}`),
  `:` before a flow indicator (`[a:]`), a flow mapping over several lines or with a collection as a key;
- no empty document, and yaml-rs raised nothing (a syntax error or a duplicate key is reported with its
  line by the exact path).

tests/unit/test_plain_yaml.py checks the two paths against each other (known disagreements, every YAML
file of the repository, random streams, random text, mutated real files); a red-team review's generators
(7.5 million texts, 680,000 mutants of corpus files) found the flow-collection and depth corners above.

A document's line is its first line of content, as PyYAML's root node starts there. Field positions are
not computed here: documents.py finds them with the exact path when a diagnostic first asks for one.
"""

from __future__ import annotations

import re

import yaml
import yaml_rs
from yaml.nodes import ScalarNode

# A node needs at least two characters (`1,`) and the exact path refuses more than 200,000 nodes per
# document (documents.MAX_NODES_PER_DOCUMENT): below this size that limit cannot be reached.
MAX_PLAIN_TEXT = 256 * 1024
# The exact path refuses field paths deeper than 64 (documents.MAX_DEPTH): text indented by fewer than half
# this many columns and with flow brackets nested fewer than half this deep cannot reach it (`_shallow`).
MAX_PLAIN_DEPTH = 60
# Words remembered by `_agreed` (a hostile stream of unique words must not grow memory without bound).
WORD_MEMO_MAX = 50_000

_RESOLVER = yaml.resolver.Resolver()
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

_UNSAFE_CHARACTER = re.compile(r"[\x00-\x09\x0b-\x1f\x7f\\]")
# A word: text between whitespace and flow indicators (split in C, twice as fast as a regular expression;
# each distinct word is judged once).
_FLOW_TO_SPACE = str.maketrans("[]{},", "     ")
_CONTENT_LINE = re.compile(r"\n[ ]*[^ \n#]")  # in "\n" + text
_COMMENT_LINE = re.compile(r"^[ ]*#.*$", re.MULTILINE)
_BRACKET = re.compile(r"[\[\]{}]")
# `_shallow`: a line that starts with this many spaces and dashes (in "\n" + text) takes the exact path.
_DEEP_INDENT = re.compile(rf"\n[ -]{{{MAX_PLAIN_DEPTH // 2}}}")
# Flow collections whose neighbours the two parsers read differently: `"a":yes` (a quoted key glued to its
# value: one word here, two scalars there), `[a:]` (libyaml refuses `:` before a flow indicator).
_QUOTE_GLUED_COLON = re.compile(r"[\"']:[^ \n]")
# (two patterns: each starts with a literal the engine looks for; as one alternation it took 16x longer)
_COLON_BEFORE_FLOW = re.compile(r":[\[\]{},?]")
# The start of a timestamp: PyYAML's pattern runs across whitespace (`2001-1-1 00:00:00`), so its words
# alone can look like text.
_DATE_START = re.compile(r"[-+]?[0-9]{4}-[0-9][0-9]?-[0-9]")
# `_shallow` walks at most this many flow brackets (a longer walk is slower than the exact path).
MAX_PLAIN_BRACKETS = 10_000
# What a YAML 1.2 reader (and yaml-rs's extensions: `_` separators, 0b/0o) may take for a number.
_NUMBER_LIKE = re.compile(
    r"[-+]?(?:0[xX][0-9a-fA-F_]+|0[oObB][0-9a-fA-F_]+|(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)"
    r"(?:[eE][-+]?[0-9_]+)?|\.(?:inf|Inf|INF|nan|NaN|NAN))"
)
# Scalars both read the same way when PyYAML resolves them to these tags.
_SAME_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_LONGEST_INT = 1_000
_SAME_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\.[0-9]*")
_SAME_WORDS = {_BOOL: frozenset({"true", "True", "TRUE", "false", "False", "FALSE"}),
               _NULL: frozenset({"~", "null", "Null", "NULL"})}
# First characters of tags, anchors, aliases, directives, complex keys, block scalars, reserved
# indicators and a leading `:` (YAML 1.1 and 1.2 differ on plain scalars that start with it).
_INDICATORS = frozenset("!&*%?|>@`:")
# First characters of everything PyYAML's implicit resolvers (bools, nulls, numbers, dates, merges,
# values) or a yaml-rs number match (it skips `_`: `_3` is 3), and of indicators: any other first
# character starts a word that is text to both.
_MAYBE_NOT_TEXT = _INDICATORS | frozenset("-+._0123456789") | frozenset(
    first for first in _RESOLVER.yaml_implicit_resolvers if first)

# Words whose reading is known (bounded: a hostile stream of unique words must not grow memory).
_agreed_words: set[str] = set()
_disagreed_words: set[str] = set()


def _agreed(word: str) -> bool:
    """Whether PyYAML and yaml-rs read `word`, as a plain scalar or a mapping key, the same way (asked
    only for words that start with one of `_MAYBE_NOT_TEXT`; any other is text to both)."""
    scalar = word[:-1] if len(word) > 1 and word.endswith(":") else word  # `key:`: the key
    if scalar[0] in _INDICATORS or scalar in ("...", "<<", "=") or _DATE_START.match(scalar):
        return False
    tag = _RESOLVER.resolve(ScalarNode, scalar, (True, False))
    if tag == _STR:
        # yaml-rs reads a number through any `_` (`_0` is 0, `._1` 0.1)
        return _NUMBER_LIKE.fullmatch(scalar.replace("_", "")) is None
    if tag == _INT:
        # past 4,300 digits Python's int() refuses (sys.int_info), which PyYAML reports; yaml-rs does not
        return len(scalar) <= _LONGEST_INT and _SAME_INT.fullmatch(scalar) is not None
    if tag == _FLOAT:
        return _SAME_FLOAT.fullmatch(scalar) is not None
    # bools and nulls in their common spellings; timestamps, merges and values never
    return scalar in _SAME_WORDS.get(tag, frozenset())


def _words_agreed(text: str) -> bool:
    words = set(_judged_text(text).translate(_FLOW_TO_SPACE).split())  # ASCII, no control characters
    if not words.isdisjoint(_disagreed_words):
        return False
    for word in words - _agreed_words:
        if word[0] not in _MAYBE_NOT_TEXT:
            continue  # text to both; not remembered (most are names, unique per file)
        if len(_agreed_words) + len(_disagreed_words) >= WORD_MEMO_MAX:
            _agreed_words.clear()
            _disagreed_words.clear()
        if not _agreed(word):
            _disagreed_words.add(word)
            return False
        _agreed_words.add(word)
    return True


def _judged_text(text: str) -> str:
    """`text` without its whole-line comments, whose words no parser reads, when that cannot hide a plain
    word: a line that starts with `#` is a comment, or inside a quoted scalar that spans lines, and such a
    scalar can be followed by a plain word on its last line only inside a flow collection that spans lines
    too (flow mappings never do here: `_plain_text`). So with every flow sequence on one line too,
    the comments go; otherwise every word is judged (an English comment's `on` or `no` then sends the file
    down the exact path)."""
    if "#" not in text or not _each_line_closes(text, "[", "]"):
        return text
    return _COMMENT_LINE.sub("", text)


def _each_line_closes(text: str, opening: str, closing: str) -> bool:
    """Whether every line opens as many `opening` brackets as it closes: no flow collection of that kind
    spans lines (a quoted bracket counts too, which only makes the answer stricter)."""
    if opening not in text and closing not in text:
        return True
    return all(line.count(opening) == line.count(closing)
               for line in text.split("\n") if opening in line or closing in line)


def _shallow(body: str) -> bool:
    """Whether no field of `body` ("\n" + text) can be nested 64 deep (the exact path's limit; yaml-rs
    has none, and crashes the process past about 10,000 levels): a field's depth is at most its line's
    leading spaces and dashes (< 30 here), one more for a key after a dash, plus the flow brackets
    around it (< 30)."""
    if _DEEP_INDENT.search(body):
        return False
    limit = MAX_PLAIN_DEPTH // 2
    brackets = body.count("[") + body.count("{")
    if brackets >= limit:
        if brackets > MAX_PLAIN_BRACKETS:
            return False
        depth = 0
        for match in _BRACKET.finditer(body):
            depth = depth + 1 if match.group() in "[{" else max(depth - 1, 0)
            if depth >= limit:
                return False
    return True


def _scalar_keys(value: object) -> bool:
    """Whether every mapping key in `value` is a scalar (yaml-rs makes tuple and frozenset keys of
    collections used as keys)."""
    if isinstance(value, dict):
        return all(type(key) in _SCALAR_TYPES and _scalar_keys(item) for key, item in value.items())
    if isinstance(value, list):
        return all(map(_scalar_keys, value))
    return True


_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})


def _documents_in(body: str) -> list[tuple[int, int]] | None:
    """The (start, end) of each document in `body` ("\n" + text), split at `---` lines. None when a marker
    line has content after it, or the text has `...` document ends or `%` directives."""
    if "\n..." in body or "\n%" in body:
        return None
    spans = []
    start = 0
    found = body.find("\n---")
    while found >= 0:
        end = body.find("\n", found + 4)
        end = len(body) if end < 0 else end
        if body[found + 4:end].strip(" "):
            return None
        spans.append((start, found))
        start = end
        found = body.find("\n---", end)
    spans.append((start, len(body)))
    return spans


def _glued_colon(text: str) -> bool:
    if ('":' in text or "':" in text) and _QUOTE_GLUED_COLON.search(text):
        return True
    return _COLON_BEFORE_FLOW.search(text) is not None


def _plain_text(text: str) -> bool:
    return (len(text) <= MAX_PLAIN_TEXT and text.isascii() and _UNSAFE_CHARACTER.search(text) is None
            and _shallow("\n" + text) and not _glued_colon(text)
            # flow mappings each on one line: libyaml refuses a key that runs over a line break in one,
            # yaml-rs joins it (a collection as one's key is checked on the data: `_scalar_keys`)
            and _each_line_closes(text, "{", "}")
            and _words_agreed(text))


def _document_lines(text: str) -> list[int] | None:
    """The first content line of each document, or None when a document is empty or a marker unusual."""
    body = "\n" + text
    spans = _documents_in(body)
    if spans is None:
        return None
    lines: list[int] = []
    counted = line = 0  # line breaks in body[:counted]: counted on from one document to the next
    for index, (start, end) in enumerate(spans):
        content = _CONTENT_LINE.search(body, start, end)
        if content is None:
            if index == 0:
                continue  # comments before the first `---` are no document
            return None  # an explicit empty document: the exact path says what it is
        line += body.count("\n", counted, content.start() + 1)
        counted = content.start() + 1
        lines.append(line)
    return lines


def read_plain(text: str) -> list[tuple[int, object]] | None:
    """Each document's first line and data, read by yaml-rs; None when the text must take the exact path
    (see the module docstring). The data equals what documents.py's exact path gives."""
    if not _plain_text(text):
        return None
    lines = _document_lines(text)
    if not lines:
        return None
    try:
        loaded = yaml_rs.loads(text, parse_datetime=False)
    except BaseException as err:  # a Rust panic arrives as pyo3's PanicException, a BaseException
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        return None
    documents: list[object]
    if len(lines) == 1:
        documents = [loaded]
    elif isinstance(loaded, list) and len(loaded) == len(lines):
        documents = list(loaded)
    else:
        return None
    if any(document is None for document in documents):
        return None
    # a collection as a key outside a flow mapping is followed by its `:` (a word starting with `:`, which
    # `_agreed` refuses); inside one it may have no value, and no `:` (`{[a]}`)
    if "{" in text and not all(map(_scalar_keys, documents)):
        return None
    return list(zip(lines, documents, strict=True))
