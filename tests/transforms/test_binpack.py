"""Best-fit decreasing against a one-row-at-a-time reference and against TRL's packer."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.transforms.binpack import best_fit_decreasing


def bfd_reference(lengths, block):
    """Best-fit decreasing one row at a time, as textbooks (and TRL) state it: longest row first
    (ties in input order); it goes into the pack with the least room that holds it, the pack
    that reached that room first on a tie; else into a new pack."""
    packs, rooms, since = [], [], []  # rows per pack, room left, when the pack reached its room
    for clock, i in enumerate(sorted(range(len(lengths)), key=lambda i: -lengths[i])):
        fits = [p for p in range(len(packs)) if rooms[p] >= lengths[i]]
        if fits:
            p = min(fits, key=lambda p: (rooms[p], since[p]))
        else:
            p = len(packs)
            packs.append([])
            rooms.append(block)
            since.append(clock)
        packs[p].append(i)
        rooms[p] -= lengths[i]
        since[p] = clock
    return packs


@settings(max_examples=300, deadline=None)
@given(data=st.data(), block=st.integers(1, 40))
def test_best_fit_decreasing_equals_the_one_row_at_a_time_reference(data, block):
    lengths = data.draw(st.lists(st.integers(1, block), max_size=80))
    order, per_pack = best_fit_decreasing(np.array(lengths, dtype=np.int64), block)
    packs = np.split(order, np.cumsum(per_pack)[:-1]) if len(order) else []
    assert [p.tolist() for p in packs] == bfd_reference(lengths, block)


@settings(max_examples=25, deadline=None)
@given(data=st.data(), block=st.integers(1, 30))
def test_best_fit_decreasing_equals_trl(data, block):
    """Same packs as TRL's ``pack_dataset(strategy="bfd")``, the packer SFTTrainer users run."""
    trl = pytest.importorskip("trl")
    from datasets import Dataset

    lengths = data.draw(st.lists(st.integers(1, block), min_size=1, max_size=60))
    rows = [[1000 * i + k for k in range(n)] for i, n in enumerate(lengths)]
    packed = trl.pack_dataset(Dataset.from_dict({"input_ids": rows}), block, strategy="bfd")
    theirs = [[ids[at] // 1000 for at in np.cumsum([0] + sl[:-1])]
              for ids, sl in zip(packed["input_ids"], packed["seq_lengths"])]
    order, per_pack = best_fit_decreasing(np.array(lengths), block)
    assert [p.tolist() for p in np.split(order, np.cumsum(per_pack)[:-1])] == theirs


def test_best_fit_decreasing_refuses_rows_that_do_not_fit():
    with pytest.raises(ValueError, match="1..4"):
        best_fit_decreasing(np.array([2, 5]), 4)
