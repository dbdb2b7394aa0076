"""Loading policy files: YAML files → validated PolicySet + diagnostics. The only I/O in the api package
(with api/files.py, which reads one file safely).

`load_policy_dir` reads every `*.yaml` / `*.yml` under a directory (recursively, sorted, so the result never
depends on the file system's listing order), every document in each file, and never raises for bad input:

- a file that cannot be read (not a regular file, too large, not UTF-8: api/files.py), or a YAML syntax
  error → one diagnostic for the file (documents before a syntax error are kept);
- an object that fails validation → diagnostics, and the object is left out (an AuthorizationPolicy is
  replaced by its fail-closed stand-in, api/authorizationpolicy.py `fail_closed`); valid objects in the
  same file and in other files are kept;
- two objects with the same kind/namespace/name → the second (in file order) is left out;
- then cross-object validation (`controlplane.api.validate`) prunes what refers to missing things.

The top-level `observability/` directory (Prometheus configuration, not policy) is skipped too.
Hidden files and directories (names starting with ".") are skipped: editors leave swap files there, and
Kubernetes ConfigMap volumes keep a second copy of every file under `..data/`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from controlplane.api.authorizationpolicy import AuthorizationPolicy, fail_closed
from controlplane.api.credentials import Credential, credentials_dir, load_credentials
from controlplane.api.deprecated import NAMES as DEPRECATED_NAMES
from controlplane.api.deprecated import rewrite
from controlplane.api.destinationrule import DestinationRule
from controlplane.api.diagnostics import (
    ERROR,
    REQUIRED_FIELD,
    UNKNOWN,
    WARNING,
    Diagnostic,
    FieldPath,
    format_path,
    pydantic_message,
    pydantic_path,
    relevant_errors,
)
from controlplane.api.documents import Document, Source, TagMemo, parse_documents
from controlplane.api.files import Unreadable, read_policy_file
from controlplane.api.gateway import Gateway
from controlplane.api.kubernetes import IGNORED_KINDS, KubernetesObject, KubernetesService
from controlplane.api.meshconfig import MeshConfig
from controlplane.api.meta import DEFAULT_NAMESPACE, ObjectKey, PolicyObject
from controlplane.api.peerauthentication import PeerAuthentication
from controlplane.api.policyset import PolicySet
from controlplane.api.ratelimit import RateLimitPolicy
from controlplane.api.requestauthentication import RequestAuthentication
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.sidecar import Sidecar
from controlplane.api.telemetry import Telemetry
from controlplane.api.validate import validate_policy
from controlplane.api.virtualservice import VirtualService
from controlplane.api.workloadentry import WorkloadEntry, WorkloadGroup

# Every kind we understand, by `kind:` value. A new kind is a model module plus one entry here.
KINDS: Mapping[str, type[PolicyObject]] = {
    cls.KIND: cls
    for cls in (
        DestinationRule, MeshConfig, ServiceEntry, Telemetry, VirtualService, WorkloadEntry, WorkloadGroup,
        Gateway, RateLimitPolicy, PeerAuthentication, KubernetesService, Sidecar,
        AuthorizationPolicy, RequestAuthentication,
    )
}
# Kubernetes kinds that mean nothing without Kubernetes: an Info, never an error (api/kubernetes.py).
KINDS = {**KINDS, **dict.fromkeys(IGNORED_KINDS, KubernetesObject)}

YAML_SUFFIXES = (".yaml", ".yml")
# Top-level directories of a policy directory that hold other tools' YAML, not policy: `observability/`
# keeps the Prometheus scrape configuration next to the mesh it scrapes (docs/telemetry.md).
NOT_POLICY_DIRS = ("observability",)


def load_policy_dir(path: str | os.PathLike[str]) -> tuple[PolicySet, list[Diagnostic]]:
    """Load a policy directory (or a single file). Diagnostics are sorted by file and line."""
    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = policy_files(root)
    else:
        return PolicySet(), [Diagnostic(str(root), 1, UNKNOWN, UNKNOWN, UNKNOWN, "no such file or directory")]
    # Gateway certificates live next to the policy (api/credentials.py).
    credentials, problems = load_credentials(credentials_dir(root))
    policy, diagnostics = load_policy_files(files, credentials)
    return policy, sorted(problems + diagnostics)


def policy_files(root: Path) -> list[Path]:
    """The YAML files under `root` that `load_policy_dir` reads, in the order it reads them."""
    return [Path(name) for name in policy_file_names(root)]


def policy_file_names(root: Path) -> list[str]:
    """`policy_files` as strings (`str(path)` of each): the policy store lists the directory on every
    reload, and Path objects made that a tenth of a no-op reload."""
    top = str(root)
    # os.path.join(top, inner), without its per-call checks (once per file and reload)
    prefix = "" if top == "." else top if top.endswith(os.sep) else top + os.sep
    found: list[str] = []  # paths relative to root, as posix (unique: the order of the full paths too)
    for directory, dirnames, filenames in os.walk(top):
        relative = "" if directory == top else directory[len(top):].lstrip(os.sep).replace(os.sep, "/")
        dirnames[:] = [
            name for name in dirnames
            if not name.startswith(".") and not (not relative and name in NOT_POLICY_DIRS)
        ]
        for name in filenames:
            if name.endswith(YAML_SUFFIXES) and not name.startswith("."):
                inner = f"{relative}/{name}" if relative else name
                found.append(inner)
    found.sort()  # strings, not (relative, full) pairs: a sixth of listing 5,000 files
    return [prefix + inner for inner in found]


def load_policy_files(
    files: Iterable[str | os.PathLike[str]], credentials: Mapping[str, Credential] | None = None
) -> tuple[PolicySet, list[Diagnostic]]:
    """Load the given files in the given order (see the module docstring for what is kept)."""
    texts: list[tuple[str, str]] = []
    diagnostics: list[Diagnostic] = []
    for file in files:
        name = os.fspath(file)
        text = read_policy_file(name)
        if isinstance(text, Unreadable):
            diagnostics.append(Diagnostic(name, 1, UNKNOWN, UNKNOWN, UNKNOWN, text.reason))
        else:
            texts.append((name, text))
    policy, more = load_policy_texts(texts, credentials)
    return policy, sorted(diagnostics + more)


def load_policy_texts(
    texts: Iterable[tuple[str, str]], credentials: Mapping[str, Credential] | None = None
) -> tuple[PolicySet, list[Diagnostic]]:
    """Load policy from (file name, YAML text) pairs; the pure core of the loader, handy in tests."""
    diagnostics: list[Diagnostic] = []
    objects: dict[ObjectKey, PolicyObject] = {}
    sources: dict[ObjectKey, Source] = {}
    # fail-closed stand-ins of invalid objects, used where no valid definition of the key exists
    fallbacks: dict[ObjectKey, tuple[PolicyObject, Source]] = {}
    memo: TagMemo = {}
    for file, text in texts:
        decoded, syntax = decode_file(file, text, memo)
        if syntax is not None:
            diagnostics.append(syntax)
        for item in decoded:
            diagnostics.extend(item.diagnostics)
            obj = item.obj
            if obj is None:
                if item.fallback is not None and item.fallback.key not in fallbacks:
                    fallbacks[item.fallback.key] = (item.fallback, item.source)
                continue
            first = sources.get(obj.key)
            if first is not None:
                diagnostics.append(duplicate_diagnostic(item, first))
                continue
            objects[obj.key] = obj
            sources[obj.key] = item.source
    for key, (stand_in, source) in fallbacks.items():
        if key not in objects:
            objects[key], sources[key] = stand_in, source
    policy, semantic = validate_policy(PolicySet(objects.values(), sources=sources, credentials=credentials))
    return policy, sorted(diagnostics + semantic)


@dataclass(frozen=True)
class Decoded:
    """One document of a file: its object when valid, and its key when kind and name could be read (so an
    invalid object can keep its last valid version, see policystore.py)."""

    source: Source
    key: ObjectKey | None
    obj: PolicyObject | None
    diagnostics: tuple[Diagnostic, ...]
    # what an invalid object is enforced as when it has no last valid version (fail closed; None: nothing)
    fallback: PolicyObject | None = None


def decode_file(
    file: str, text: str, memo: TagMemo | None = None
) -> tuple[list[Decoded], Diagnostic | None]:
    """Every document of one file, decoded, plus the syntax error that ended the file (if any). `memo`:
    shared across files by callers that decode many (documents.TagMemo)."""
    documents, syntax = parse_documents(file, text, memo)
    # a deprecated key is written out in the text, unless escaped in a quoted key
    may_deprecate = "\\" in text or any(name in text for name in DEPRECATED_NAMES)
    decoded = []
    for document in documents:
        obj, problems = decode_object(document, may_deprecate)
        key = obj.key if obj else _key_of(document.data)
        fallback = None
        if obj is None and key is not None and key.kind == AuthorizationPolicy.KIND:
            fallback = fail_closed(document.data)
        decoded.append(Decoded(document.source, key, obj, tuple(problems), fallback))
    if syntax is None:
        return decoded, None
    return decoded, Diagnostic(file, syntax.line, UNKNOWN, UNKNOWN, UNKNOWN, syntax.message)


def duplicate_diagnostic(item: Decoded, first: Source) -> Diagnostic:
    assert item.key is not None
    message = f"duplicate {item.key}; first defined at {first.file}:{first.line}, which stays in effect"
    return _diagnostic(item.source, item.key.kind, item.key.name, (), message)


def _key_of(data: object) -> ObjectKey | None:
    """The key an invalid document would have: its kind and name must be readable strings."""
    if not isinstance(data, dict):
        return None
    kind, name = _kind_and_name(data)
    metadata = data.get("metadata")
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE) if isinstance(metadata, dict) else None
    if UNKNOWN in (kind, name) or not isinstance(namespace, str) or not namespace:
        return None
    return ObjectKey(kind, namespace, name)


def decode_object(
    document: Document, may_deprecate: bool = True
) -> tuple[PolicyObject | None, list[Diagnostic]]:
    """One document → a valid policy object, or None and the reasons why not. `may_deprecate`: False when
    the document cannot hold a deprecated field name (its file's text does not mention one)."""
    data = document.data
    source = document.source
    if data is None:
        # An empty document (a stray `---`) is not an error; a structural problem is.
        return None, _structure_problems(document, UNKNOWN, UNKNOWN)
    if not isinstance(data, dict):
        return None, [_diagnostic(source, UNKNOWN, UNKNOWN, (), "expected a mapping (a policy object)")]
    kind, name = _kind_and_name(data)
    diagnostics = _structure_problems(document, kind, name)
    kind_value = data.get("kind")
    cls = KINDS.get(kind_value) if isinstance(kind_value, str) else None
    if cls is None:
        message = REQUIRED_FIELD if "kind" not in data else _unsupported_kind(data["kind"])
        return None, [*diagnostics, _diagnostic(source, kind, name, ("kind",), message)]
    # the positions name every mapping key of the document: rewriting (a copy of the whole document) only
    # when one of them is a deprecated name was a sixth of decoding
    if may_deprecate and any(path and path[-1] in DEPRECATED_NAMES for path in source.positions):
        data, deprecations = rewrite(data)
    else:
        deprecations = []
    diagnostics.extend(
        _diagnostic(source, kind, name, d.path, d.message, severity=ERROR if d.is_error else WARNING)
        for d in deprecations
    )
    try:
        obj = cls.model_validate(data)
    except ValidationError as err:
        for error in relevant_errors(err.errors(include_url=False)):
            path = pydantic_path(error["loc"])
            field = format_path(error["loc"])
            message = pydantic_message(error, cls)
            diagnostics.append(_diagnostic(source, kind, name, path, message, field))
        return None, diagnostics
    diagnostics.extend(
        _diagnostic(source, kind, name, p.path, p.message, severity=p.severity, code=p.code)
        for p in obj.check()
    )
    # Warnings and infos (deprecated aliases, ignored Kubernetes kinds) leave the object applied.
    return (None if any(d.is_error for d in diagnostics) else obj), diagnostics


def _kind_and_name(data: dict[object, object]) -> tuple[str, str]:
    """Best-effort kind and name for diagnostics about an object that may be invalid."""
    kind = data.get("kind")
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return (
        kind if isinstance(kind, str) and kind else UNKNOWN,
        name if isinstance(name, str) and name else UNKNOWN,
    )


def _structure_problems(document: Document, kind: str, name: str) -> list[Diagnostic]:
    # These carry their own line: a duplicate key's path also names the first occurrence.
    return [
        Diagnostic(document.source.file, p.line, kind, name, format_path(p.path), p.message)
        for p in document.problems
    ]


def _unsupported_kind(kind: object) -> str:
    istio = sorted(name for name, cls in KINDS.items() if cls is not KubernetesObject)
    return f"unsupported kind {kind!r}; supported: {', '.join(istio)} (other Kubernetes kinds are ignored)"


def _diagnostic(
    source: Source,
    kind: str,
    name: str,
    path: FieldPath,
    message: str,
    field: str | None = None,
    severity: str = ERROR,
    code: str = "",
) -> Diagnostic:
    return Diagnostic(
        file=source.file,
        line=source.line_of(path),
        kind=kind,
        name=name,
        field=field if field is not None else format_path(path),
        message=message,
        severity=severity,
        code=code,
    )
