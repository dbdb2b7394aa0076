"""Helpers for the live-reload e2e tests (tests/e2e/test_live_reload.py): editors' atomic saves, the
control plane's Prometheus metrics, and a regular expression that passes our validation but that Envoy's
RE2 rejects (so that a NACK comes from a real policy object with a file and line).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.mesh import http_request

# Python's `re` accepts all of these, RE2 (Envoy) none: lookahead, an atomic group, a possessive
# quantifier, `\Z`. The first one our validation lets through is the one a NACK test can use.
RE2_REJECTS = ("^/(?=x)", "^/(?>x)", "^/x*+", "^/x\\Z")


def atomic_write(path: Path, text: str) -> None:
    """Save as editors do: write a hidden temporary file next to `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def metrics(admin_port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The control plane's /metrics: {(sample name, sorted labels): value}."""
    reply = http_request(admin_port, "/metrics")
    assert reply.status == 200, reply
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """One sample's value (0 when it has not been created yet)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def pushes_by_type(admin_port: int) -> dict[str, float]:
    """controlplane_xds_pushes_total by type."""
    return {
        dict(labels)["type"]: value
        for (name, labels), value in metrics(admin_port).items()
        if name == "controlplane_xds_pushes_total"
    }


def first_accepted(candidates: Iterable[str]) -> str | None:
    """The first regex our policy validation accepts (None if it rejects them all)."""
    from controlplane.api.common import check_regex

    for candidate in candidates:
        try:
            check_regex(candidate)
        except ValueError:
            continue
        return candidate
    return None


def line_of(text: str, needle: str) -> int:
    """1-based line number of the first line containing `needle`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the text")
