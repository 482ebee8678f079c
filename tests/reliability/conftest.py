"""Shared helpers of the reliability suite.

Tests report what they exercised through the ``figures`` fixture; when the environment variable
``EFFNET_RELIABILITY_LOG`` names a file (``scripts/reliability_report.py`` sets it), each record is
appended to it as one JSON line, and the report sums them into docs/reliability.md.
"""

import json
import os

import pytest

pytest.register_assert_rewrite("reliability_helpers")
from reliability_helpers import (  # noqa: E402 (after the rewrite hook, for assert messages)
    PROGRESSIVE_RUN,
    TINY_RUN,
    tiny_model,
    train_in_child,
)


class Figures:
    def __init__(self, test: str):
        self.test = test
        self.path = os.environ.get("EFFNET_RELIABILITY_LOG")

    def __call__(self, kind: str, name: str, count: int = 1, **info) -> None:
        """kind: crash_point | fault | bad_input | files_lost | measure."""
        if not self.path:
            return
        row = {"test": self.test, "kind": kind, "name": name, "count": count, **info}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.fixture
def figures(request):
    return Figures(request.node.nodeid)


@pytest.fixture
def tiny():
    return tiny_model()


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory):
    """One uninterrupted run per config, shared by every crash test."""
    refs = {}
    for name, config in (("tiny", TINY_RUN), ("progressive", PROGRESSIVE_RUN)):
        out = tmp_path_factory.mktemp(f"ref-{name}") / "run"
        assert train_in_child({**config, "out": str(out)}) == 0
        refs[name] = out
    return refs
