"""Packaging: effnet declares ranges (it must not replace a user's torch), CI and the benchmarks
pin exact versions in constraints.txt, and CI runs the README's own test command."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _deps() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(d).name: Requirement(d) for d in project["dependencies"]}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.lower()] = version
    return pins


def test_torch_and_torchvision_are_ranges_that_admit_the_pinned_versions():
    deps, pins = _deps(), _pins()
    for name in ("torch", "torchvision"):
        spec = deps[name].specifier
        assert not any(s.operator == "==" for s in spec), f"{name} is pinned in pyproject.toml"
        assert Version(pins[name]) in spec, f"constraints.txt's {name} is outside {spec}"
        lower = min(Version(s.version) for s in spec if s.operator == ">=")
        assert lower < Version(pins[name]), f"{name}: the range should reach below the pin"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick = readme[readme.index("## Quick start") :].split("```")[1]
    test_cmd = next(line for line in quick.splitlines() if "pytest" in line).strip()
    assert "-c constraints.txt" in test_cmd
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci


def test_every_test_extra_is_pinned_for_ci():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for dep in project["optional-dependencies"]["test"]:
        name = re.split(r"[<>=!~\[ ]", dep, maxsplit=1)[0].lower()
        assert name in pins, f"test extra {name} has no pin in constraints.txt"
