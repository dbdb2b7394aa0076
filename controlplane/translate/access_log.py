"""Access logs: the HTTP connection manager's `access_log` entry for MeshConfig's built-in `envoy` provider.

Envoy's file logger (`envoy.access_loggers.file`) writing to `accessLogFile` (`/dev/stdout` by default, so
logs end up wherever the proxy's stdout goes: the terminal, the compose log, a test's log file).

- TEXT: Istio's default text format (pilot/pkg/model/telemetry_logging.go `EnvoyTextLogFormat`), or
  `accessLogFormat` as written (a trailing newline added when missing: Envoy writes no line break itself);
- JSON: Istio's default JSON keys (`EnvoyJSONLogFormatIstio`) plus `correlation_id` from the
  `x-correlation-id` header, or `accessLogFormat` parsed as a JSON object of key → format command.
"""

from __future__ import annotations

import json

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as sfs
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.access_loggers.filters.cel.v3 import cel_pb2

from controlplane.model.telemetry import AccessLogConfig, LogEncoding
from controlplane.translate import names
from controlplane.translate.protos import pack

CEL_FILTER = "envoy.access_loggers.extension_filters.cel"

ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

# Istio's JSON keys, in Istio's order (Envoy writes them sorted anyway), plus correlation_id.
ISTIO_JSON_FORMAT: dict[str, str] = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "correlation_id": "%REQ(X-CORRELATION-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}


def access_log(config: AccessLogConfig) -> accesslog_pb2.AccessLog:
    log = file_pb2.FileAccessLog(path=config.path, log_format=_format(config))
    out = accesslog_pb2.AccessLog(name=names.FILE_ACCESS_LOG, typed_config=pack(log))
    if config.filter_expression is not None:
        # Istio's Telemetry filter: Envoy's CEL access log filter.
        cel = cel_pb2.ExpressionFilter(expression=config.filter_expression)
        out.filter.extension_filter.name = CEL_FILTER
        out.filter.extension_filter.typed_config.Pack(cel)
    return out


def _format(config: AccessLogConfig) -> sfs.SubstitutionFormatString:
    out = sfs.SubstitutionFormatString()
    if config.encoding is LogEncoding.JSON:
        # MeshConfig validation made sure a custom format is a JSON object of strings.
        fields = json.loads(config.format) if config.format else ISTIO_JSON_FORMAT
        out.json_format.update(fields)
        return out
    text = config.format or ISTIO_TEXT_FORMAT
    out.text_format_source.inline_string = text if text.endswith("\n") else text + "\n"
    return out
