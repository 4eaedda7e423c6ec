"""The train/validation split: a partition of the rows, whole groups on one side, the validation
size as datasets.train_test_split rounds it, and one typed error for sizes the build cannot give."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.errors import SplitError
from datakit.recipe import SplitConfig
from datakit.split import split_indices, validation_count


@pytest.mark.parametrize("n_rows,size", [(10, 0.1), (7, 0.3), (1000, 0.05), (3, 0.5)])
def test_a_fraction_rounds_up_as_datasets_does(n_rows, size):
    from datasets import Dataset

    ds = Dataset.from_dict({"x": list(range(n_rows))}).train_test_split(test_size=size, seed=0)
    assert validation_count(size, n_rows) == len(ds["test"]) == math.ceil(size * n_rows)


@pytest.mark.parametrize("size,match", [(2.5, "whole number"), (10, "only 10 rows"), (0.999, "only 10 rows")])
def test_sizes_the_build_cannot_give_are_a_split_error(size, match):
    with pytest.raises(SplitError, match=match):
        validation_count(size, 10)


@settings(deadline=None, max_examples=200)
@given(groups=st.lists(st.integers(0, 8), min_size=2, max_size=60), size=st.integers(1, 30),
       shuffle=st.booleans(), seed=st.integers(0, 2**16))
def test_groups_never_straddle_and_the_rows_are_partitioned(groups, size, shuffle, seed):
    n = len(groups)
    if size >= n:
        with pytest.raises(SplitError):
            split_indices(n, SplitConfig(val_set_size=size, seed=seed, shuffle=shuffle), groups=np.array(groups))
        return
    out = split_indices(n, SplitConfig(val_set_size=size, seed=seed, shuffle=shuffle), groups=np.array(groups))
    train, val = out["train"].tolist(), out["validation"].tolist()
    assert sorted(train + val) == list(range(n))
    assert not {groups[i] for i in train} & {groups[i] for i in val}
    assert len(val) >= size or not train  # whole groups until validation holds at least `size` rows
    again = split_indices(n, SplitConfig(val_set_size=size, seed=seed, shuffle=shuffle), groups=np.array(groups))
    assert all(np.array_equal(out[k], again[k]) for k in out)
