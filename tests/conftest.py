import sys
from pathlib import Path

# tests/reference.py, the independent implementation the tests compare against.
sys.path.insert(0, str(Path(__file__).parent))

import pytest


@pytest.fixture(autouse=True)
def _four_gib_alloc_limit():
    """Every test runs under a 4 GiB allocation limit, the default's floor (the default is
    max(4 GiB, half the physical memory)), so that the sizes the tests expect to be refused are
    refused on any machine; tests of other limits set their own."""
    import recsketch as rs

    previous = rs.set_alloc_limit(4 << 30)
    yield
    rs.set_alloc_limit(previous)
