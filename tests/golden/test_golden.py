"""Every task's output is bit-identical to the goldens recorded before the redesign (tests/golden/cases.py)."""

from __future__ import annotations

import json

import pytest

import cases


@pytest.fixture(scope="module")
def golden():
    stored = json.loads(cases.GOLDEN.read_text())
    key = cases.machine_key()
    if key not in stored:
        pytest.skip(f"no goldens recorded on this machine ({key}); record them with python tests/golden/cases.py --record")
    return stored[key]


def test_pipeline_tasks_are_bit_identical(golden):
    assert cases.pipeline_cases() == golden["pipeline"]


def test_cli_tasks_are_bit_identical(golden):
    assert cases.cli_cases() == golden["cli"]


def test_quantized_bundle_manifest_is_unchanged(golden, tiny_bundle):
    got = cases.quantized_manifest(tiny_bundle)
    for which in ("export", "int8"):
        assert got[which] == golden["quantized"][which], which
