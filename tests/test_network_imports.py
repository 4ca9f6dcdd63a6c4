"""How the unmixing step is reached: ``from recsketch.network import unmix`` is the documented
export (``recsketch.network.__all__``) of the *function*; its helpers (``sketch_basis``,
``block_directions``, ...), which the benches import, live in the module
``recsketch.network.unmixing``. The module and the function do not share a name, so every
spelling gives one thing: ``import recsketch.network.unmixing as U`` the module, and no
spelling a function where a module is expected.
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
    module = importlib.import_module("recsketch.network.unmixing")
    Y, b, q = _planted()
    got, want = unmix(Y, b, q), module.unmix(Y, b, q)
    assert got.rank == want.rank == 3
    assert [m.columns.tolist() for m in got.matrices] == \
        [m.columns.tolist() for m in want.matrices]


def test_import_as_gives_the_module():
    import recsketch.network.unmixing as U
    assert isinstance(U, types.ModuleType)
    assert U is importlib.import_module("recsketch.network.unmixing")
    assert callable(U.sketch_basis) and callable(U.block_directions)
    assert U.unmix is rs.network.unmix


def test_the_function_name_is_not_a_module():
    # `import recsketch.network.unmix as U` used to bind the function (the package's re-export
    # shadowed the module of the same name); now there is no such module to import
    assert not isinstance(rs.network.unmix, types.ModuleType)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("recsketch.network.unmix")
