"""The sidecar's inbound listener: what other proxies' traffic for this workload goes through.

Istio captures inbound traffic with iptables on 15006; we have no capture, so the workload's endpoints in
the ServiceEntry point at the sidecar's `inbound_address` (node metadata) and the sidecar forwards to the
app's ports (`app_ports`) on the loopback, or on the inbound host when the inbound listener binds a
specific non-wildcard address.

Each app port has the mTLS mode its PeerAuthentication gives (model/peerauth.py); translate/inbound.py
turns the modes into filter chains (mTLS, plaintext or both).
"""

from __future__ import annotations

import ipaddress

from controlplane.api.policyset import PolicySet
from controlplane.model.authz import build_authz
from controlplane.model.identity import ProxyIdentity
from controlplane.model.peerauth import workload_modes
from controlplane.model.proxy_model import Inbound


def build_inbound(policy: PolicySet, proxy: ProxyIdentity) -> Inbound | None:
    if proxy.inbound_address is None or not proxy.app_ports:
        return None
    host = proxy.inbound_address.host
    try:
        unspecified = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        unspecified = False
    if unspecified:
        # 0.0.0.0 / :: — the app listens on the loopback of the same family.
        host = "::1" if ":" in host else "127.0.0.1"
    modes, origins = workload_modes(policy, proxy.namespace, proxy.label_map, proxy.app_ports)
    authz = build_authz(policy, proxy.namespace, proxy.label_map)
    return Inbound(proxy.inbound_address, host, proxy.app_ports, modes, origins, authz)
