"""repository.store.id_array on object arrays (Python ints beyond int64, NumPy scalars, bools,
strings mixed in): the one rule for ids, checked element by element."""

from fractions import Fraction

import numpy as np
import pytest

from recsketch.repository.store import id_array


def test_object_ids_in_range_become_int64():
    out = id_array(np.array([3, np.int64(-7), 2**63 - 1, -2**63], dtype=object))
    assert out.dtype == np.int64
    assert out.tolist() == [3, -7, 2**63 - 1, -2**63]


@pytest.mark.parametrize("ids", [[2**70, "x"], ["x", 2**70], [2**70, True], [1, Fraction(1, 2)],
                                 [2**64, 1.5, 3], [2**70, None]])
def test_a_non_integer_anywhere_is_the_type_error(ids):
    # even after an id out of range: the type is checked for every element first
    with pytest.raises(TypeError, match="ids must be integers"):
        id_array(np.array(ids, dtype=object))


def test_the_first_id_out_of_range_is_named():
    with pytest.raises(ValueError, match=f"labels must fit int64, got {2**63}$"):
        id_array(np.array([5, 2**63, -2**70, 2**64], dtype=object), "labels")
    with pytest.raises(ValueError, match=f"ids must fit int64, got {-2**63 - 1}$"):
        id_array([1, -2**63 - 1])
