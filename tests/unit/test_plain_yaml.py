"""The fast YAML path (api/plain_yaml.py) gives exactly what PyYAML's exact path gives, or stands aside.

Three sources of text: the known disagreements between YAML 1.1 (PyYAML) and 1.2 (yaml-rs), every YAML
file of this repository (Istio corpus samples, examples, configs), and random documents built from risky
and ordinary scalars in block and flow style. For each, `parse_documents` (fast path when it applies)
must equal `parse_documents_exact` in data (key order included), lines, field positions, structural
problems and syntax errors.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.api.documents import Document, SyntaxProblem, parse_documents, parse_documents_exact
from controlplane.api.plain_yaml import read_plain

REPO = Path(__file__).resolve().parents[2]
YAML_FILES = sorted(
    path for pattern in ("*.yaml", "*.yml") for path in REPO.rglob(pattern)
    if not {".venv", "node_modules", ".git"} & set(path.relative_to(REPO).parts)
)


def _canonical(value: object) -> object:
    """`value` with types and key order made visible (1 vs 1.0 vs True, dict order), NaN comparable."""
    if isinstance(value, dict):
        return ["dict", [[_canonical(k), _canonical(v)] for k, v in value.items()]]
    if isinstance(value, list):
        return ["list", [_canonical(item) for item in value]]
    if isinstance(value, float) and math.isnan(value):
        return ["float", "nan"]
    return [type(value).__name__, repr(value)]


def _view(result: tuple[list[Document], SyntaxProblem | None]) -> str:
    documents, syntax = result
    return json.dumps([
        [[d.source.file, d.source.line, sorted(map(list, d.source.positions.items())), _canonical(d.data),
          [[list(p.path), p.line, p.message] for p in d.problems]] for d in documents],
        None if syntax is None else [syntax.line, syntax.message],
    ], default=str)


def assert_same(text: str) -> bool:
    """Both paths agree on `text`; whether the fast path took it."""
    fast = parse_documents("f.yaml", text)
    assert _view(fast) == _view(parse_documents_exact("f.yaml", text)), text
    return read_plain(text) is not None


DISAGREEMENTS = [
    "a: yes\n", "a: on\n", "a: Off\n", "a: NO\n", "yes: 1\n", "a: 0755\n", "a: 08\n", "a: 0o17\n",
    "a: 1_000\n", "a: 1e3\n", "a: 1.5e3\n", "a: +.5\n", "a: -.5\n", "a: 2001-02-03\n", "a: 1:20\n",
    "a: 0x1F\n", "a: 0b101\n", "a: =\n", "<<: {b: 1}\n", "a: !!str 80\n", "a: &x 1\nb: *x\n",
    "a: |\n  text\n", "a: >\n  text\n", "? a\n: b\n", "a: 1\na: 2\n", "a: 1\n---\n", "--- {a: 1}\n",
    "%YAML 1.1\n---\na: 1\n", "a: 1\n...\n", "a: \"x\ny\"\n", "a: \"\\x41\"\n", "a:\tb\n",
    "a: caf\u00e9\n", "a: 1\r\nb: 2\r\n", "a: [1, 2\n", "a: b: c\n", "- a\nb: 1\n", "a: 1\n  b: 2\n",
    "a: 2001-12-14 21:59:43.10 -5\n", "a: .NaN\n", "a: ::1\n", "a: :x\n", "a: @x\n",
    "a: " + "1" * 4301 + "\n",  # longer than Python's int() accepts: PyYAML reports it
    "a: _3\n", "a: _0.5\n", "_1: x\n",  # yaml-rs skips `_` in numbers
    # a line that starts with `#` inside a quoted scalar of a flow sequence over lines: its words count
    '[ "x\n# y", yes ]\n', "['a \"b', \"c\n# y\", yes]\n", "a: [x,\n# on\n y]\n",
    "[a]: b\n", "{a: 1}: b\n", "x: {[a]: b}\n",  # collections as keys: a problem on the exact path
    # found by a red-team review: nesting past the exact path's limit (yaml-rs has none and crashed the
    # process at 15,000 levels), quoted keys glued to their value, `:` before a flow indicator, keys of
    # flow mappings that are collections or run over a line, timestamps split at whitespace
    "-  " * 65 + "x\n", "- - -  " * 22 + "x\n", "-  " * 15000 + "x\n", "[" * 40 + "]" * 40 + "\n",
    '{"a":yes}\n', "{'a':on}\n", '["a":0o7]\n', '{"a":1e3}\n', '{"k":<<}\n', '{"k"::x}\n',
    "[a:]\n", "{a:}\n", "[a:, b]\n", "a: [b:]\n", "{~:}\n", "{[a]}\n", "{{}}\n", "x: {{a: 1, b: 2}}\n",
    "{[a, b], c}\n", "{a\n b: 1}\n", "a: 2001-1-1 00:00:00\n", "a: 2001-1-1\n  00:00:00 -5\n",
    "a: 2001-2-30 00:00:00\n", "2001-1-1 00:00:00: x\n", "- [a]: b\n", "a: \ud800\n",
]


@pytest.mark.parametrize("text", DISAGREEMENTS)
def test_known_disagreements_take_the_exact_path(text: str) -> None:
    assert not assert_same(text)


AGREED = [
    "a: 1\nb: -2\nc: 1.5\nd: true\ne: null\nf: ~\ng:\nh: text\n",
    "---\na: [x, 'y', \"z\"]\n---\n# a comment\nb: {c: 1, d: [2, 3]}\n",
    "# header\n\na:\n  - name: x\n    port: 80\n  - name: y # trailing comment\n",
    "hosts: [\"*\", \"*.example.com\"]\ntimeout: 5s\nretryOn: 5xx,connect-failure\naddress: 10.0.0.1\n",
    "a: 'it''s'\nb: \"quoted: yes\"\nc: http://example.com:8080/path\nd: 2001:db8::1\n",
    "# retries on, mTLS: yes\na: 1\n  # no comment is read\nb: [x, y]\n",  # whole-line comments: unread
]


@pytest.mark.parametrize("text", AGREED)
def test_ordinary_policy_takes_the_fast_path_and_agrees(text: str) -> None:
    assert assert_same(text)


def test_every_yaml_file_of_the_repository_agrees() -> None:
    fast = [path for path in YAML_FILES if assert_same(path.read_text(errors="replace"))]
    assert len(YAML_FILES) > 100
    # most of them are plain policy: the fast path is not a dead branch
    assert len(fast) > len(YAML_FILES) // 3, (len(fast), len(YAML_FILES))


def test_positions_of_a_fast_document_come_from_the_exact_path() -> None:
    text = "a: 1\n---\nkind: X\nspec:\n  hosts:\n  - h\n"
    documents, _ = parse_documents("f.yaml", text)
    assert read_plain(text) is not None
    assert documents[1].source.line == 3
    assert documents[1].source.line_of(("spec", "hosts", 0)) == 6
    exact = parse_documents_exact("f.yaml", text)[0][1].source.positions
    assert dict(documents[1].source.positions) == dict(exact)


SCALARS = st.sampled_from([
    "x", "name", "80", "-1", "0", "1.5", "1.", ".5", "true", "False", "null", "~", "yes", "no", "on", "off",
    "0755", "08", "1e3", "1_000", "+.5", "1:20", "2001-02-03", "0x1F", ".inf", "-.inf", ".nan", "5s",
    "10.0.0.1", "*", "a b", "a: b", "a#b", "#x", "-", "- x", "'q'", '"d"', "''", '""', "'yes'", '"80"',
    "http://h:80/p", "[a]", "{a: 1}", "=", "<<", "!!str", "&a", "*a", "|", ">", "%", "@", "?", ":",
    "a,b", "---", "...", "' x '", "\"a\\tb\"", "x y z", "TRUE", "Null", "0b1", "0o7", "1.0e+3",
])
KEYS = st.sampled_from(["a", "b", "spec", "80", "yes", "on", "1e3", "'q'", '"d"', "k k", "<<", "x-y"])


def _block(value: object, indent: int) -> str:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return " {}\n"
        lines = []
        for key, item in value.items():
            body = _block(item, indent + 2)
            lines.append(f"{pad}{key}:{body if body.startswith((' ', chr(10))) else ' ' + body}")
        return "\n" + "".join(lines)
    if isinstance(value, list):
        if not value:
            return " []\n"
        items = (_block(item, indent + 2) if isinstance(item, dict | list) else f" {item}\n"
                 for item in value)
        return "\n" + "".join(f"{pad}-{item}" for item in items)
    return f" {value}\n"


def _flow(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    return str(value)


TREES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=3)
                     | st.dictionaries(KEYS, children, max_size=3), max_leaves=8)


@st.composite
def streams(draw: st.DrawFn) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        tree = draw(st.dictionaries(KEYS, TREES, min_size=1, max_size=4))
        text = _block(tree, 0).lstrip("\n") if draw(st.booleans()) else _flow(tree) + "\n"
        if draw(st.booleans()):
            text = "# comment " + draw(SCALARS) + "\n" + text
        parts.append(text)
    separator = draw(st.sampled_from(["---\n", "---  \n", "\n---\n"]))
    lead = draw(st.sampled_from(["", "---\n", "# c\n---\n"]))
    return lead + separator.join(parts)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_random_streams_agree(text: str) -> None:
    assert_same(text)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab1:-_.e+ \n#'\"[]{},*&!|>?%~0x")), max_size=60))
def test_random_text_agrees(text: str) -> None:
    assert_same(text)


PIECES = [*"ab1:-_.e+ \n#'\"[]{},0x", " yes", ": on", "\n- ", "\n  ", ": 0755", ": 1e3", " #", "\n---\n",
          ": |\n"]
PLAIN_FILES = [text for path in YAML_FILES
               if read_plain(text := path.read_text(errors="replace")) is not None]


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False))
def test_mutated_repository_files_agree(rng: random.Random) -> None:
    """Real files with a few characters inserted, deleted or lines repeated: near-misses of plain text."""
    text = rng.choice(PLAIN_FILES)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(text) + 1)
        choice = rng.random()
        if choice < 0.4:
            text = text[:at] + rng.choice(PIECES) + text[at:]
        elif choice < 0.7:
            text = text[:at] + text[at + rng.randint(1, 5):]
        else:
            lines = text.split("\n")
            lines.insert(rng.randrange(len(lines)), rng.choice(lines))
            text = "\n".join(lines)
    assert_same(text)
