"""Every naming scheme of the Envoy resources we generate, in one place.

Names are part of the contract with Envoy (RDS and EDS names must match what LDS and CDS refer to), with
operators (stats and admin output are keyed by them) and with Istio users (who know `outbound|80||host`),
so they are defined here once and nowhere else. They follow Istio where Istio has a scheme:

    cluster         outbound|<port>|<subset>|<host>    (pilot/pkg/model/service.go BuildSubsetKey)
    inbound cluster inbound|<app port>||                (BuildInboundSubsetKey)
    virtual host    <host>:<port>; catch-alls "allow_any" / "block_all"
    route           <http name>[.<match name>] (empty without an http name), "default" for a default route
    TCP listener    <address>_<port>                    (Istio's outbound listener names)
    special         PassthroughCluster                  (ALLOW_ANY; a dynamic forward proxy here)
    tracing cluster telemetry|<port>||<host>            (a tracing provider's collector; Istio reuses the
                                                         collector service's outbound cluster)
    JWKS cluster    jwks|<host>|<port>                  (a RequestAuthentication jwksUri's server; Istio
                                                         names it outbound|<port>||<host> when it is a
                                                         service, we keep it apart as for telemetry)

Hosts are used as written in the ServiceEntry. Istio would qualify short Kubernetes names to FQDNs
(`reviews` → `reviews.default.svc.cluster.local`); our hosts are not Kubernetes services, so cluster names
keep the host as written (the FQDN forms are accepted as references and domains: api/hosts.py).
"""

from __future__ import annotations

from controlplane.model.proxy_model import ClusterRef, HostPort, Route

# The sidecar's single outbound HTTP listener and its route configuration. Istio names route configurations
# by port ("80"); we have one listener for all ports (the app's HTTP proxy), so one name for both.
OUTBOUND_HTTP_LISTENER = "outbound_http"
OUTBOUND_HTTP_ROUTE_CONFIG = "outbound_http"
OUTBOUND_HTTP_STAT_PREFIX = "outbound_http"

# Istio's name for the route a service without a VirtualService gets.
DEFAULT_ROUTE = "default"

# The inbound listener (traffic for the local app) and its route configuration.
INBOUND_HTTP_LISTENER = "inbound_http"
INBOUND_HTTP_ROUTE_CONFIG = "inbound_http"
INBOUND_HTTP_STAT_PREFIX = "inbound_http"

# Istio's special cluster and catch-all virtual host / route names.
PASSTHROUGH_CLUSTER = "PassthroughCluster"
ALLOW_ANY = "allow_any"
BLOCK_ALL = "block_all"
# The DNS cache the dynamic forward proxy filter and PassthroughCluster share (they must name the same one).
PASSTHROUGH_DNS_CACHE = "passthrough_dns_cache"

# Well-known Envoy extension names (filter `name` fields).
HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"
FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"
DYNAMIC_FORWARD_PROXY = "envoy.filters.http.dynamic_forward_proxy"
DYNAMIC_FORWARD_PROXY_CLUSTER = "envoy.clusters.dynamic_forward_proxy"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
OPENTELEMETRY_TRACER = "envoy.tracers.opentelemetry"
ZIPKIN_TRACER = "envoy.tracers.zipkin"
FILE_ACCESS_LOG = "envoy.access_loggers.file"


def outbound_cluster(ref: ClusterRef) -> str:
    """`outbound|9080|v2|reviews` — Istio's subset key; the subset part is empty without a subset."""
    return f"outbound|{ref.service.port}|{ref.subset}|{ref.service.host}"


def inbound_cluster(port: int) -> str:
    """`inbound|9101||` — Istio's inbound cluster name (empty subset and host)."""
    return f"inbound|{port}||"


def tcp_listener(address: str, port: int) -> str:
    return f"{address}_{port}"


def virtual_host(service: HostPort) -> str:
    return f"{service.host}:{service.port}"


def route(route: Route) -> str:
    """Istio's route name: the VirtualService `http[].name`, with `.match[].name` appended when both are set.

    Unnamed entries get an empty name, as in Istio; Envoy does not need route names to be unique.
    """
    if route.is_default:
        return DEFAULT_ROUTE
    if not route.http_name:
        return ""
    return f"{route.http_name}.{route.match_name}" if route.match_name else route.http_name


def telemetry_cluster(host: str, port: int) -> str:
    """`telemetry|4317||otel-collector`: the collector cluster of a tracing provider. Not `outbound|...`,
    so that it never collides with a ServiceEntry's cluster for the same host and port (which may use
    another protocol or policy than the tracer needs)."""
    return f"telemetry|{port}||{host}"


def jwks_cluster(host: str, port: int) -> str:
    """`jwks|issuer.example.com|443`: the cluster Envoy fetches a `jwksUri` through (translate/jwks.py)."""
    return f"jwks|{host}|{port}"


# --- gateways (translate/gateway*.py): Istio's gateway names where Istio has them --------------------------

LOCAL_RATELIMIT = "envoy.filters.http.local_ratelimit"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
# Route metadata namespace carrying a gateway route's rate-limit keys (read by the local rate limit filter).
RATELIMIT_METADATA = "controlplane.ratelimit"
GATEWAY_RATELIMIT_STAT_PREFIX = "gateway_ratelimit"
# The readiness listener's path (Istio's pilot-agent serves the same on 15021).
GATEWAY_HEALTH_PATH = "/healthz/ready"
GATEWAY_HEALTH_ROUTE_CONFIG = "gateway_health"


def gateway_http_route_config(port: int) -> str:
    """`http.80`: the route table all plain HTTP servers of a port share."""
    return f"http.{port}"


def gateway_https_route_config(port: int, port_name: str, gateway: str, namespace: str) -> str:
    """`https.443.https.ingress.istio-system`: the route table of one TLS-terminating server."""
    return f"https.{port}.{port_name}.{gateway}.{namespace}"


def gateway_virtual_host(host: str, port: int) -> str:
    return f"{host}:{port}"


def gateway_blackhole(port: int) -> str:
    """The virtual host of a route table nothing is bound to (every request gets 404)."""
    return f"blackhole:{port}"


def secret(credential: str) -> str:
    """The SDS secret with a credential's certificate and key: the credentialName itself."""
    return credential


def ca_secret(credential: str) -> str:
    """The SDS secret with a credential's CA (tls mode MUTUAL); Istio's `<credentialName>-cacert`."""
    return f"{credential}-cacert"


# --- mesh identity (translate/mtls.py): Istio's SDS names, so config dumps read like Istio's ----------------

# The workload's own certificate chain and key, and the mesh's trust bundle
# (istio: pkg/model/authentication.go).
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
RAW_BUFFER_TRANSPORT_SOCKET = "envoy.transport_sockets.raw_buffer"
# Endpoint metadata that selects a cluster's transport socket (Envoy's transport_socket_matches).
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"
TLS_MODE_KEY = "tlsMode"
TLS_MODE_ISTIO = "istio"
# Istio's names of the two auto-mTLS transport socket matches.
TLS_MODE_ISTIO_MATCH = "tlsMode-istio"
TLS_MODE_DISABLED_MATCH = "tlsMode-disabled"
# The inbound filter chains (Istio names them by the listener they replace).
INBOUND_MTLS_CHAIN = "inbound_mtls"
INBOUND_PLAINTEXT_CHAIN = "inbound_plaintext"
# Plaintext requests go through their own route table when some app ports refuse them (STRICT ports).
INBOUND_PLAINTEXT_ROUTE_CONFIG = "inbound_http_plaintext"
