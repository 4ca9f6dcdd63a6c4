"""How ``recsketch.network.unmix`` is reached: ``from recsketch.network import unmix`` is the
documented export (``recsketch.network.__all__``) of the *function*; the module of the same
name holds its helpers (``sketch_basis``, ``block_directions``, ...) that the benches import.

``import recsketch.network.unmix as U`` binds ``getattr(recsketch.network, "unmix")``, which
the package's re-export makes the function, not the module (``importlib.import_module``
still reaches the module). The fix (a module that calls its function, so every spelling
works) belongs in ``python/recsketch/network/__init__.py``, which this change does not
edit (another helper's area this session): the test of the module spelling is a strict
xfail until it lands, and then fails as XPASS so that the mark is removed.
"""

import importlib
import types

import numpy as np
import pytest

import recsketch as rs


def _planted():
    d, b, q = 4095, 45, 0.1
    sk = rs.Sketcher(d, block_size=b, density=q, seed=3)
    X = np.random.default_rng(0).random((12, 3))
    return sk.module_matrix("P", 1).apply_short(X), b, q


def test_the_documented_export_calls_unmix():
    from recsketch.network import unmix
    module = importlib.import_module("recsketch.network.unmix")
    Y, b, q = _planted()
    got, want = unmix(Y, b, q), module.unmix(Y, b, q)
    assert got.rank == want.rank == 3
    assert [m.columns.tolist() for m in got.matrices] == \
        [m.columns.tolist() for m in want.matrices]


@pytest.mark.xfail(strict=True, reason="recsketch.network re-exports the function unmix under "
                                       "its module's name; fix in network/__init__.py")
def test_import_as_gives_the_module():
    import recsketch.network.unmix as U
    assert isinstance(U, types.ModuleType)
    assert U is importlib.import_module("recsketch.network.unmix")
    assert callable(U.sketch_basis) and callable(U.block_directions)
