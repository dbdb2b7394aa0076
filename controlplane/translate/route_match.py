"""Route matches: the model's RouteMatch → Envoy `RouteMatch` (Istio core/route/route.go translateRouteMatch).

uri exact/prefix/regex → `path` / `prefix` / `safe_regex`; `ignoreUriCase` → `case_sensitive: false`;
headers (and `:method`, `:authority`, `:scheme`) → `headers[]` with `string_match` or `present_match`,
`withoutHeaders` → `invert_match`; queryParams → `query_parameters[]`.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.type.matcher.v3 import regex_pb2, string_pb2

from controlplane.model.routemodel import MatchKind, RouteMatch, StringMatch


def route_match(match: RouteMatch) -> rc.RouteMatch:
    out = rc.RouteMatch()
    path = match.path
    if path.kind is MatchKind.EXACT:
        out.path = path.value
    elif path.kind is MatchKind.REGEX:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=path.value))
    else:
        out.prefix = path.value or "/"
    if not match.case_sensitive:
        out.case_sensitive.value = False
    for header in match.headers:
        matcher = rc.HeaderMatcher(name=header.name, invert_match=header.invert)
        if header.match.kind is MatchKind.PRESENT:
            matcher.present_match = True
        else:
            matcher.string_match.CopyFrom(string_matcher(header.match))
        out.headers.append(matcher)
    for name, value in match.query_parameters:
        query = rc.QueryParameterMatcher(name=name)
        if value.kind is MatchKind.PRESENT:
            query.present_match = True
        else:
            query.string_match.CopyFrom(string_matcher(value))
        out.query_parameters.append(query)
    return out


def string_matcher(match: StringMatch) -> string_pb2.StringMatcher:
    if match.kind is MatchKind.EXACT:
        return string_pb2.StringMatcher(exact=match.value)
    if match.kind is MatchKind.PREFIX:
        return string_pb2.StringMatcher(prefix=match.value)
    if match.kind is MatchKind.REGEX:
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    # PRESENT has no StringMatcher form; ".*" matches any value (used for CORS origins "*").
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".*"))
