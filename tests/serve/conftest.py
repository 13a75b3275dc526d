"""A `kinema serve` process per test module: started by the test, stopped after."""

from __future__ import annotations

import pytest
from served import Served


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("serve") / "data", "--max-upload-mb", "1").start()
    yield s
    s.stop()
