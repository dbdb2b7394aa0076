"""The fuzzer of tests/reliability/fuzz.py, bounded and derandomized (a fixed seed) for `make test`;
`make fuzz` runs the long version and prints the counts."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from tests.reliability.fuzz import Fuzzer, run

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))


@pytest.fixture
def fuzzer() -> Iterator[Fuzzer]:
    made = Fuzzer()
    yield made
    made.close()


def test_no_mutation_of_config_breaks_the_properties(
    fuzzer: Fuzzer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    run(fuzzer, EXAMPLES, seed=None)
    assert sum(fuzzer.counts.values()) >= EXAMPLES
    # both kinds of edit were exercised
    kinds = {key.rpartition(":")[2] for key in fuzzer.counts}
    assert kinds == {"invalid", "valid"}
