"""What a delta client holds of one type (name → version), stored as a shared `Layer` plus deviations.

A sidecar synced to a snapshot holds the snapshot's layer (two thousand outbound clusters, shared by every
shape) plus its own few resources. Keeping a name → version dict per stream and type costs ~100 bytes per
resource per stream; remembering "has layer L" by reference plus an overlay of the names where the client
differs from L (own resources, held-back removals, NACKed versions) costs only the deviations.

The overlay maps a name to the version the client holds, or to None for a name of the base layer that the
client does not hold. `rebase` moves the base to another layer without changing what the mapping says.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from controlplane.xds.layers import Layer, changed_between


class Known:
    __slots__ = ("base", "overlay")

    def __init__(self, initial: dict[str, str] | None = None) -> None:
        self.base: Layer | None = None
        self.overlay: dict[str, str | None] = dict(initial) if initial else {}

    def get(self, name: str) -> str | None:
        if name in self.overlay:
            return self.overlay[name]
        if self.base is None:
            return None
        found = self.base.resources.get(name)
        return None if found is None else found.version

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def __bool__(self) -> bool:
        return any(v is not None for v in self.overlay.values()) or (
            self.base is not None and len(self.base.resources) > len(self.overlay))

    def set(self, name: str, version: str) -> None:
        self.overlay[name] = version

    def discard(self, name: str) -> None:
        if self.base is not None and name in self.base.resources:
            self.overlay[name] = None
        else:
            self.overlay.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        """The names the client holds (unordered)."""
        for name, version in self.overlay.items():
            if version is not None:
                yield name
        if self.base is not None:
            yield from (name for name in self.base.names if name not in self.overlay)

    def adopt(self, layer: Layer, own: Iterable[tuple[str, str]]) -> None:
        """The client holds exactly `layer` plus `own` (names not in the layer), e.g. after an initial
        wildcard response."""
        self.base = layer
        self.overlay = dict(own)

    def rebase(self, layer: Layer | None) -> None:
        """Store the same mapping as deviations from `layer` (None: a plain dict)."""
        if layer is self.base:
            candidates: Iterable[str] = list(self.overlay)
        else:
            candidates = changed_between(self.base, layer).union(self.overlay)
        overlay: dict[str, str | None] = {}
        for name in candidates:
            held = self.get(name)
            under = None if layer is None else layer.resources.get(name)
            if held != (None if under is None else under.version):
                overlay[name] = held
        self.base, self.overlay = layer, overlay
