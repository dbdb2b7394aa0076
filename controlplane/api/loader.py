"""Loading policy files: YAML files → validated PolicySet + diagnostics. The only I/O in the api package.

`load_policy_dir` reads every `*.yaml` / `*.yml` under a directory (recursively, sorted, so the result never
depends on the file system's listing order), every document in each file, and never raises for bad input:

- a file that cannot be read, or a YAML syntax error → one diagnostic for the file (documents before a
  syntax error are kept);
- an object that fails validation → diagnostics, and the object is left out; valid objects in the same
  file and in other files are kept;
- two objects with the same kind/namespace/name → the second (in file order) is left out;
- then cross-object validation (`controlplane.api.validate`) prunes what refers to missing things.

The top-level `observability/` directory (Prometheus configuration, not policy) is skipped too.
Hidden files and directories (names starting with ".") are skipped: editors leave swap files there, and
Kubernetes ConfigMap volumes keep a second copy of every file under `..data/`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import ValidationError

from controlplane.api.authorizationpolicy import AuthorizationPolicy
from controlplane.api.credentials import Credential, credentials_dir, load_credentials
from controlplane.api.destinationrule import DestinationRule
from controlplane.api.diagnostics import (
    REQUIRED_FIELD,
    UNKNOWN,
    Diagnostic,
    FieldPath,
    format_path,
    pydantic_message,
    pydantic_path,
    relevant_errors,
)
from controlplane.api.documents import Document, Source, parse_documents
from controlplane.api.gateway import Gateway
from controlplane.api.meshconfig import MeshConfig
from controlplane.api.meta import ObjectKey, PolicyObject
from controlplane.api.peerauthentication import PeerAuthentication
from controlplane.api.policyset import PolicySet
from controlplane.api.ratelimit import RateLimitPolicy
from controlplane.api.requestauthentication import RequestAuthentication
from controlplane.api.serviceentry import ServiceEntry
from controlplane.api.telemetry import Telemetry
from controlplane.api.validate import validate_policy
from controlplane.api.virtualservice import VirtualService
from controlplane.api.workloadentry import WorkloadEntry, WorkloadGroup

# Every kind we understand, by `kind:` value. A new kind is a model module plus one entry here.
KINDS: Mapping[str, type[PolicyObject]] = {
    cls.KIND: cls
    for cls in (
        DestinationRule, MeshConfig, ServiceEntry, Telemetry, VirtualService, WorkloadEntry, WorkloadGroup,
        Gateway, RateLimitPolicy, PeerAuthentication,
        AuthorizationPolicy, RequestAuthentication,
    )
}

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
    found: list[Path] = []
    for directory, dirnames, filenames in os.walk(root):
        top = Path(directory) == root
        dirnames[:] = [
            name for name in dirnames if not name.startswith(".") and not (top and name in NOT_POLICY_DIRS)
        ]
        found.extend(
            Path(directory, name)
            for name in filenames
            if name.endswith(YAML_SUFFIXES) and not name.startswith(".")
        )
    return sorted(found, key=lambda file: file.relative_to(root).as_posix())


def load_policy_files(
    files: Iterable[str | os.PathLike[str]], credentials: Mapping[str, Credential] | None = None
) -> tuple[PolicySet, list[Diagnostic]]:
    """Load the given files in the given order (see the module docstring for what is kept)."""
    texts: list[tuple[str, str]] = []
    diagnostics: list[Diagnostic] = []
    for file in files:
        name = os.fspath(file)
        try:
            texts.append((name, Path(name).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as err:
            message = f"cannot read file: {err.strerror if isinstance(err, OSError) else err}"
            diagnostics.append(Diagnostic(name, 1, UNKNOWN, UNKNOWN, UNKNOWN, message))
    policy, more = load_policy_texts(texts, credentials)
    return policy, sorted(diagnostics + more)


def load_policy_texts(
    texts: Iterable[tuple[str, str]], credentials: Mapping[str, Credential] | None = None
) -> tuple[PolicySet, list[Diagnostic]]:
    """Load policy from (file name, YAML text) pairs; the pure core of the loader, handy in tests."""
    diagnostics: list[Diagnostic] = []
    objects: dict[ObjectKey, PolicyObject] = {}
    sources: dict[ObjectKey, Source] = {}
    for file, text in texts:
        documents, syntax = parse_documents(file, text)
        if syntax is not None:
            diagnostics.append(Diagnostic(file, syntax.line, UNKNOWN, UNKNOWN, UNKNOWN, syntax.message))
        for document in documents:
            obj, problems = decode_object(document)
            diagnostics.extend(problems)
            if obj is None:
                continue
            first = sources.get(obj.key)
            if first is not None:
                message = f"duplicate {obj.key}; first defined at {first.file}:{first.line}"
                diagnostics.append(_diagnostic(document.source, obj.kind, obj.metadata.name, (), message))
                continue
            objects[obj.key] = obj
            sources[obj.key] = document.source
    policy, semantic = validate_policy(PolicySet(objects.values(), sources=sources, credentials=credentials))
    return policy, sorted(diagnostics + semantic)


def decode_object(document: Document) -> tuple[PolicyObject | None, list[Diagnostic]]:
    """One document → a valid policy object, or None and the reasons why not."""
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
    try:
        obj = cls.model_validate(data)
    except ValidationError as err:
        for error in relevant_errors(err.errors(include_url=False)):
            path = pydantic_path(error["loc"])
            field = format_path(error["loc"])
            diagnostics.append(_diagnostic(source, kind, name, path, pydantic_message(error), field))
        return None, diagnostics
    diagnostics.extend(_diagnostic(source, kind, name, p.path, p.message) for p in obj.check())
    return (None if diagnostics else obj), diagnostics


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
    return f"unsupported kind {kind!r}; supported: {', '.join(sorted(KINDS))}"


def _diagnostic(
    source: Source, kind: str, name: str, path: FieldPath, message: str, field: str | None = None
) -> Diagnostic:
    return Diagnostic(
        file=source.file,
        line=source.line_of(path),
        kind=kind,
        name=name,
        field=field if field is not None else format_path(path),
        message=message,
    )
