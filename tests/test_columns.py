"""The column contract: offsets, the Arrow helpers against pyarrow's own, and the checked
provenance columns."""
from itertools import accumulate

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.columns import flat_lists, list_array, model_batch, row_offsets
from datakit.errors import ColumnError
from datakit.writers.spill import SpillWriter


@settings(deadline=None)
@given(st.lists(st.integers(0, 50), max_size=30))
def test_row_offsets_are_the_running_sums_from_zero(lengths):
    assert row_offsets(np.array(lengths, np.int64)).tolist() == [0, *accumulate(lengths)]


@settings(deadline=None)
@given(st.lists(st.lists(st.integers(-2**31, 2**31 - 1), max_size=6), max_size=12))
def test_list_array_matches_pyarrow_and_flat_lists_reads_it_back(rows):
    flat = np.array([v for r in rows for v in r], np.int32)
    lengths = np.array([len(r) for r in rows], np.int64)
    arr = list_array(flat, lengths, pa.int32())
    assert arr.equals(pa.array(rows, pa.list_(pa.int32())))
    values, got_lengths = flat_lists(arr.slice(1) if rows else arr)
    expected = rows[1:] if rows else rows
    assert values.tolist() == [v for r in expected for v in r]
    assert got_lengths.tolist() == [len(r) for r in expected]


def test_the_spill_refuses_rows_without_their_source_or_group(tmp_path):
    """Filling in a default would silently put rows in source 0 or give them no split group."""
    batch = model_batch(np.array([1, 2, 3], np.int32), np.array([2, 1]))
    spill = SpillWriter(tmp_path / "spill")
    with pytest.raises(ColumnError, match="the spill: the rows lack the column.s. _source, _group"):
        spill.write(batch)
    assert spill.rows == 0
