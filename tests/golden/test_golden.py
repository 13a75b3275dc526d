"""Every task's output is bit-identical to the goldens recorded before the redesign (tests/golden/cases.py).

The int8 manifest's golden is checked where the suite already quantizes the same export
(tests/quantize/test_quantize.py), so the suite quantizes it once.
"""

from __future__ import annotations

import cases


def test_pipeline_tasks_are_bit_identical(golden):
    assert cases.pipeline_cases() == golden["pipeline"]


def test_cli_tasks_are_bit_identical(golden):
    assert cases.cli_cases() == golden["cli"]


def test_export_manifest_is_unchanged(golden, tiny_bundle):
    assert cases.comparable(tiny_bundle) == golden["quantized"]["export"]
