"""A chat step reads plain conversations straight from the Arrow columns: the messages it hands
the template are the ones the row-by-row path makes (``to_pylist`` then ``normalize``)."""
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.sources.formats import MESSAGE_TYPE
from datakit.transforms.chat_locate import normalize
from datakit.transforms.template import plain_messages

TEXT = st.text(alphabet=st.sampled_from("ab \n中😀<>|"), max_size=6)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": TEXT,
                                 "reasoning_content": st.one_of(st.none(), st.none(), TEXT)})
ROWS = st.lists(st.lists(MESSAGE, min_size=1, max_size=4), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, cut=st.tuples(st.integers(0, 5), st.integers(0, 6)))
def test_plain_messages_are_the_normalized_rows(rows, cut):
    batch = pa.RecordBatch.from_pydict({"messages": pa.array(rows, MESSAGE_TYPE),
                                        "_where": [f"f:{i}" for i in range(len(rows))]})
    reasoning = any(m["reasoning_content"] is not None for r in rows for m in r)
    batch = batch.slice(min(cut[0], len(rows)), cut[1])  # a slice keeps its column's values whole
    got = plain_messages(batch)
    if reasoning:  # the row-by-row path then (None), or the same messages
        assert got is None or got == [normalize(r["messages"]) for r in batch.to_pylist()]
        return
    assert got == [normalize(r["messages"]) for r in batch.to_pylist()]


def test_reasoning_and_other_columns_take_the_row_by_row_path():
    with_reasoning = pa.array([[{"role": "assistant", "content": "a", "reasoning_content": "r"}]], MESSAGE_TYPE)
    assert plain_messages(pa.RecordBatch.from_pydict({"messages": with_reasoning, "_where": ["f:1"]})) is None
    assert plain_messages(pa.RecordBatch.from_pydict({"prompt": ["p"], "_where": ["f:1"]})) is None


PLAIN = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool"]),
                                        "content": st.text(alphabet=st.sampled_from("ab <think>/\n"), max_size=12)}),
                 max_size=5)


@settings(max_examples=300, deadline=None)
@given(messages=PLAIN)
def test_sentinels_of_plain_messages_are_the_general_ones(messages):
    """The shortcut for conversations of role-and-text messages gives what the message-by-message
    path gives: the same texts, owners, shape key and sentinel conversation."""
    from datakit.transforms.chat_locate import _sentinels, sentinels

    fast, general = sentinels(messages), _sentinels(messages)
    assert (fast.texts, fast.owner, fast.key, fast.messages) == \
           (general.texts, general.owner, general.key, general.messages)
