"""What validates, builds: numbers and durations beyond the Envoy field they become are diagnostics.

Each case was reproduced on main: it passed `validate`, then raised `ValueError: Value out of range` in
translate (and after a restart the proxy's snapshot was empty)."""

from __future__ import annotations

import pytest

from tests.reliability.policy_support import demo_texts, load, translate_all

CASES = {
    # (file, text to replace, replacement, expected message fragment)
    "retries.attempts": ("routes.yaml", "attempts: 3", "attempts: 99999999999", "less than or equal to"),
    "route timeout": ("routes.yaml", "timeout: 30s", "timeout: 9223372036854775807s", "too long"),
    "requestsPerUnit": ("gateways.yaml", "requestsPerUnit: 1000", "requestsPerUnit: 18446744073709551616",
                        "less than or equal to"),
    "ringHash minimumRingSize (deprecated spelling)": (
        "destinationrules.yaml", "trafficPolicy:", "trafficPolicy:\n    loadBalancer: {consistentHash: "
        "{httpHeaderName: x, minimumRingSize: 99999999999}}", "less than or equal to"),
    "duration of 400 digits": ("routes.yaml", "timeout: 30s", "timeout: " + "9" * 400 + "s", "too long"),
    "tracing maxTagLength": ("mesh.yaml", "    zipkin:\n", "    zipkin:\n      maxTagLength: 4294967296\n",
                             "less than or equal to"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_out_of_range_value_is_a_diagnostic_and_the_rest_builds(case: str) -> None:
    file, old, new, message = CASES[case]
    texts = demo_texts()
    assert old in texts[file], f"the demo config changed: {old!r} not in {file}"
    texts[file] = texts[file].replace(old, new, 1)
    policy, diagnostics = load(texts)
    assert any(file in d and message in d for d in diagnostics), diagnostics
    translate_all(policy)  # everything that validated builds without raising


def test_largest_accepted_values_build() -> None:
    """The bounds themselves are accepted and build (an off-by-one would raise in translate)."""
    texts = demo_texts()
    texts["routes.yaml"] = (texts["routes.yaml"].replace("attempts: 3", "attempts: 4294967295", 1)
                            .replace("timeout: 30s", "timeout: 9223372036s", 1))
    gateways = texts["gateways.yaml"]
    texts["gateways.yaml"] = gateways.replace("requestsPerUnit: 1000", "requestsPerUnit: 4294967295")
    policy, diagnostics = load(texts)
    assert diagnostics == []
    translate_all(policy)
