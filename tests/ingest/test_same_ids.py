"""SameIds: np.unique of a batch's id column, kept while the next column has the same bytes."""

from __future__ import annotations

import numpy as np
import pytest

from drsdtp.ingest.same_ids import SameIds


def test_a_repeated_column_reuses_the_result_and_a_changed_one_is_sorted_again() -> None:
    memo = SameIds()
    first = np.array([7, 3, 7, 5], np.uint32)
    unique, inverse = memo.unique_inverse(first)
    assert unique.tolist() == [3, 5, 7] and inverse.tolist() == [2, 0, 2, 1]
    again = memo.unique_inverse(first.copy())  # another array, same ids: the same result objects
    assert again[0] is unique and again[1] is inverse
    changed = memo.unique(np.array([7, 3, 7, 6], np.uint32))
    assert changed is not unique and changed.tolist() == [3, 6, 7]
    # Same bytes in another width are other ids: [1, 0] as uint32 is the bytes of [1] as uint64.
    narrow = memo.unique(np.array([1, 0], np.uint32))
    wide = memo.unique(np.array([1], np.uint64))
    assert narrow.tolist() == [0, 1] and wide.tolist() == [1]


def test_the_shared_arrays_are_read_only() -> None:
    unique, inverse = SameIds().unique_inverse(np.array([2, 1], np.uint32))
    with pytest.raises(ValueError, match="read-only"):
        unique[0] = 9
    with pytest.raises(ValueError, match="read-only"):
        inverse[0] = 9
