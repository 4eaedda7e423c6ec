"""Span marks (tokenization/mask.py) against a per-token Python loop."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.tokenization.mask import misplaced, tokens_in_spans


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_span_lookup_matches_a_plain_reference(data):
    """tokens_in_spans (both its paths) and misplaced against a per-token Python loop."""
    n_rows = data.draw(st.integers(1, 5))
    one_each = data.draw(st.booleans())
    tok_row, tok_start, tok_end, spans = [], [], [], []
    for r in range(n_rows):
        cuts = sorted(data.draw(st.lists(st.integers(0, 40), min_size=1, max_size=12)))
        for a, b in zip(cuts, cuts[1:] + [cuts[-1]]):
            tok_row.append(r), tok_start.append(a), tok_end.append(b)
        k = 1 if one_each else data.draw(st.integers(0, 3))
        bounds = sorted(data.draw(st.lists(st.integers(0, 45), min_size=2 * k, max_size=2 * k, unique=True)))
        spans += [(r, bounds[2 * i], bounds[2 * i + 1]) for i in range(k)]
    span_row, span_start, span_end = (np.array([s[i] for s in spans], dtype=np.int64) for i in range(3))
    sup = tokens_in_spans(np.array(tok_row), np.array(tok_start), np.array(tok_end), span_row, span_start, span_end)
    want = [b > a and any(r == sr and ss <= a and b <= se for sr, ss, se in spans)
            for r, a, b in zip(tok_row, tok_start, tok_end)]
    assert sup.tolist() == want
    assert len(misplaced(np.array(tok_row), np.array(tok_start), np.array(tok_end), sup,
                         span_row, span_start, span_end)) == 0
    wrong = np.array(want) | (np.array(tok_end) > np.array(tok_start))  # every non-empty token marked
    bad = misplaced(np.array(tok_row), np.array(tok_start), np.array(tok_end), wrong, span_row, span_start, span_end)
    assert sorted(bad.tolist()) == [i for i, w in enumerate(wrong) if w and not want[i]]
