"""Reads a ProxyIdentity out of the `node` an Envoy sends on its first xDS request.

The metadata keys are documented in controlplane/model/identity.py; `controlplane bootstrap` writes them.
"""

from __future__ import annotations

import ipaddress
import re

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from controlplane.model.identity import (
    DEFAULT_GATEWAY_BIND,
    DEFAULT_NAMESPACE,
    DEFAULT_OUTBOUND_ADDRESS,
    DEFAULT_SERVICE_ACCOUNT,
    META_APP_PORTS,
    META_GATEWAY_BIND,
    META_HEALTH_ADDRESS,
    META_INBOUND_ADDRESS,
    META_LABELS,
    META_NAMESPACE,
    META_OUTBOUND_ADDRESS,
    META_ROLE,
    META_SERVICE_ACCOUNT,
    ProxyIdentity,
    Role,
    SocketAddress,
    parse_ports,
)

# Namespaces and service accounts end up in SPIFFE ids and in names: keep them to Kubernetes' syntax.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class NodeError(ValueError):
    """The node is missing or its metadata cannot be understood."""


def identity_of(node: base_pb2.Node) -> ProxyIdentity:
    if not node.id:
        raise NodeError("node.id is empty")
    meta = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    role_text = str(meta.get(META_ROLE, Role.SIDECAR.value))
    try:
        role = Role(role_text)
    except ValueError:
        raise NodeError(
            f"node {node.id}: metadata.{META_ROLE} must be sidecar or gateway, got {role_text!r}"
        ) from None
    labels = meta.get(META_LABELS, {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise NodeError(f"node {node.id}: metadata.{META_LABELS} must be a map of strings")
    try:
        outbound = SocketAddress.parse(str(meta.get(META_OUTBOUND_ADDRESS, DEFAULT_OUTBOUND_ADDRESS)))
    except ValueError as exc:
        raise NodeError(f"node {node.id}: metadata.{META_OUTBOUND_ADDRESS}: {exc}") from None
    inbound = None
    try:
        if META_INBOUND_ADDRESS in meta:
            inbound = SocketAddress.parse(str(meta[META_INBOUND_ADDRESS]))
    except ValueError as exc:
        raise NodeError(f"node {node.id}: metadata.{META_INBOUND_ADDRESS}: {exc}") from None
    try:
        app_ports = parse_ports(meta.get(META_APP_PORTS, ()))
    except ValueError as exc:
        raise NodeError(f"node {node.id}: metadata.{META_APP_PORTS}: {exc}") from None
    health = None
    try:
        if META_HEALTH_ADDRESS in meta:
            health = SocketAddress.parse(str(meta[META_HEALTH_ADDRESS]))
    except ValueError as exc:
        raise NodeError(f"node {node.id}: metadata.{META_HEALTH_ADDRESS}: {exc}") from None
    gateway_bind = str(meta.get(META_GATEWAY_BIND, DEFAULT_GATEWAY_BIND))
    try:
        ipaddress.ip_address(gateway_bind)
    except ValueError:
        raise NodeError(f"node {node.id}: metadata.{META_GATEWAY_BIND} must be an IP address, "
                        f"got {gateway_bind!r}") from None
    account = str(meta.get(META_SERVICE_ACCOUNT, DEFAULT_SERVICE_ACCOUNT))
    if not _NAME.fullmatch(account):
        raise NodeError(f"node {node.id}: metadata.{META_SERVICE_ACCOUNT} must be a DNS-1123 name, "
                        f"got {account!r}")
    namespace = str(meta.get(META_NAMESPACE, DEFAULT_NAMESPACE))
    if not _NAME.fullmatch(namespace):
        raise NodeError(f"node {node.id}: metadata.{META_NAMESPACE} must be a DNS-1123 name, "
                        f"got {namespace!r}")
    if inbound is not None and not app_ports:
        raise NodeError(f"node {node.id}: metadata.{META_INBOUND_ADDRESS} needs metadata.{META_APP_PORTS}")
    return ProxyIdentity(
        role=role,
        namespace=namespace,
        service_account=account,
        labels=tuple(sorted(labels.items())),
        outbound_address=outbound,
        inbound_address=inbound,
        app_ports=app_ports,
        health_address=health,
        gateway_bind=gateway_bind,
        locality="/".join(
            part for part in (node.locality.region, node.locality.zone, node.locality.sub_zone) if part
        ),
    )
