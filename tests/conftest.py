"""Shared fixtures: one random-init tiny bundle per test session (tiny DiT size, real MiniLM)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The C2PA signing key kinema makes on first use goes to a throwaway folder, never the user's ~/.config.
os.environ["KINEMA_CONFIG_DIR"] = tempfile.mkdtemp(prefix="kinema-test-config-")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A freshly exported `tiny` bundle with random weights (DiT size "test")."""
    from kinema.export.tiny import export_tiny

    out = tmp_path_factory.mktemp("bundles") / "kinema-tiny-random"
    return export_tiny(out, random_init=True, size="test", seed=0)


@pytest.fixture(scope="session")
def tiny_models():
    """The same random-init PyTorch modules the `tiny_bundle` fixture exports: (dit, vae, text_encoder)."""
    from kinema.export.tiny import load_tiny

    return load_tiny(random_init=True, size="test", seed=0)


@pytest.fixture(scope="session")
def golden() -> dict:
    """This machine's golden outputs (tests/golden/cases.py); skipped where none were recorded."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "golden"))
    import cases

    stored = json.loads(cases.GOLDEN.read_text())
    key = cases.machine_key()
    if key not in stored:
        pytest.skip(f"no goldens recorded on this machine ({key}); record them with python tests/golden/cases.py --record")
    return stored[key]
