"""Failure isolation for build + translate: one object that cannot be built is left out, never the mesh.

Validation bounds every value by the Envoy field it becomes (api/common.py), so this is defence in depth
against a bug: when building or translating a proxy shape raises, the object responsible is found and left
out of that shape's configuration, and a diagnostic (file:line) says so. Without this, a shape whose build
failed kept its previous snapshot for good (it stalled: later edits never reached it) and a new proxy of
that shape got an empty configuration (Envoy dropped every cluster).

Finding the object: a `TranslationFailure` names the objects its resource came from; each suspect is left
out in turn, and the one whose removal cures the failure and keeps the most resources is the culprit (a
failure that changes means another object fails too, found in the next round).
A failure without suspects (the build stage itself raised) tries every object, up to MAX_SEARCH. This only
runs on the failure path; a healthy build is one call, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from controlplane.api.diagnostics import UNKNOWN, Diagnostic
from controlplane.api.meta import ObjectKey
from controlplane.api.policyset import PolicySet
from controlplane.model import build_proxy
from controlplane.model.identity import ProxyIdentity
from controlplane.translate.resources import Resources
from controlplane.translate.translator import TranslationFailure, translate_proxy

log = logging.getLogger(__name__)

# Rounds of "find one culprit, leave it out" per shape, and objects tried when a failure names none.
MAX_ROUNDS = 16
MAX_SEARCH = 2000

Pipeline = Callable[[PolicySet, ProxyIdentity], Resources]


def build_and_translate(policy: PolicySet, identity: ProxyIdentity) -> Resources:
    return translate_proxy(build_proxy(policy, identity))


class BuildFailures:
    """The objects left out of some proxy shape since the last reload, as diagnostics (one per object)."""

    def __init__(self) -> None:
        self._by_key: dict[ObjectKey, Diagnostic] = {}

    def record(self, policy: PolicySet, key: ObjectKey, identity: ProxyIdentity, error: str) -> None:
        if key in self._by_key:
            return
        source = policy.source(key)
        message = (f"cannot be translated ({error}); left out of the configuration of "
                   f"{identity.describe()} (the rest of the mesh is served)")
        diagnostic = Diagnostic(source.file if source else UNKNOWN, source.line if source else 1,
                                key.kind, key.name, UNKNOWN, message)
        self._by_key[key] = diagnostic
        log.error("invalid policy: %s", diagnostic)

    def diagnostics(self) -> list[Diagnostic]:
        return sorted(self._by_key.values())


def isolated(policy: PolicySet, identity: ProxyIdentity, failures: BuildFailures,
             pipeline: Pipeline = build_and_translate) -> Resources:
    """`pipeline(policy, identity)`, leaving out the objects it cannot build (recorded in `failures`)."""
    current = policy
    for _ in range(MAX_ROUNDS):
        try:
            return pipeline(current, identity)
        except Exception as err:
            culprit = _culprit(current, identity, err, pipeline)
            if culprit is None:
                raise
            failures.record(policy, culprit, identity, _describe(err))
            current = _without(current, culprit)
    return pipeline(current, identity)


def _culprit(
    policy: PolicySet, identity: ProxyIdentity, err: Exception, pipeline: Pipeline
) -> ObjectKey | None:
    """The object whose removal cures `err`: the pipeline succeeds, fails differently, or fails only on
    objects `err` did not name (then that is another culprit, for the next round). Among the suspects,
    the one whose removal keeps the most resources wins (a Gateway is named by its rate limit's failure
    too, and leaving out the RateLimitPolicy takes less with it)."""
    suspects = [key for key in dict.fromkeys(_suspects(err)) if key in policy]
    best: tuple[int, ObjectKey] | None = None
    # On a tie the ServiceEntry goes last: leaving it out takes every rule and route of its host with it.
    for key in sorted(suspects, key=lambda key: key.kind == "ServiceEntry"):
        kept = _cures(policy, identity, err, pipeline, key, suspects)
        if kept is not None and (best is None or kept > best[0]):
            best = (kept, key)
    if best is not None:
        return best[1]
    for obj in list(policy)[:MAX_SEARCH]:
        if obj.key not in suspects and _cures(policy, identity, err, pipeline, obj.key, suspects) is not None:
            return obj.key
    return None


def _cures(policy: PolicySet, identity: ProxyIdentity, err: Exception, pipeline: Pipeline,
           key: ObjectKey, suspects: list[ObjectKey]) -> int | None:
    """How many resources the pipeline makes without `key` (0: it fails on something else), or None
    when `err` remains."""
    try:
        resources = pipeline(_without(policy, key), identity)
    except Exception as other:
        if _describe(other) == _describe(err) and (
            not suspects or set(_suspects(other)) & (set(suspects) - {key})
        ):
            return None
        return 0
    return sum(len(by_name) for by_name in resources.by_type.values())


def _suspects(err: Exception) -> list[ObjectKey]:
    if not isinstance(err, TranslationFailure):
        return []
    return [ObjectKey(o.kind, o.namespace, o.name) for o in err.origins]


def _without(policy: PolicySet, key: ObjectKey) -> PolicySet:
    return policy.replace(obj for obj in policy if obj.key != key)


def _describe(err: Exception) -> str:
    cause = err.cause if isinstance(err, TranslationFailure) else err
    return f"{type(cause).__name__}: {cause}"
