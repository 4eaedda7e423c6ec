"""Span marks (tokenization/mask.py) against a per-token Python loop of the rule."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.tokenization.base import Encoded
from datakit.tokenization.mask import mark, misplaced, tokens_in_spans


def _draw_rows(data, one_each):
    """Tokens as consecutive ranges (some zero-width) and disjoint spans, per row."""
    n_rows = data.draw(st.integers(1, 5))
    tok_row, tok_start, tok_end, spans = [], [], [], []
    for r in range(n_rows):
        cuts = sorted(data.draw(st.lists(st.integers(0, 40), min_size=1, max_size=12)))
        for a, b in zip(cuts, cuts[1:] + [cuts[-1]]):
            tok_row.append(r), tok_start.append(a), tok_end.append(b)
        k = 1 if one_each else data.draw(st.integers(0, 3))
        bounds = sorted(data.draw(st.lists(st.integers(0, 45), min_size=2 * k, max_size=2 * k, unique=True)))
        spans += [(r, bounds[2 * i], bounds[2 * i + 1]) for i in range(k)]
    return tok_row, tok_start, tok_end, spans


def _overlaps(r, a, b, spans):
    return b > a and any(r == sr and a < se and b > ss for sr, ss, se in spans)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_span_lookup_matches_a_plain_reference(data):
    """tokens_in_spans (both its paths) and misplaced against a per-token Python loop."""
    tok_row, tok_start, tok_end, spans = _draw_rows(data, data.draw(st.booleans()))
    span_row, span_start, span_end = (np.array([s[i] for s in spans], dtype=np.int64) for i in range(3))
    sup = tokens_in_spans(np.array(tok_row), np.array(tok_start), np.array(tok_end), span_row, span_start, span_end)
    want = [_overlaps(r, a, b, spans) for r, a, b in zip(tok_row, tok_start, tok_end)]
    assert sup.tolist() == want
    assert len(misplaced(np.array(tok_row), np.array(tok_start), np.array(tok_end), sup,
                         span_row, span_start, span_end)) == 0
    wrong = np.array(want) | (np.array(tok_end) > np.array(tok_start))  # every non-empty token marked
    bad = misplaced(np.array(tok_row), np.array(tok_start), np.array(tok_end), wrong, span_row, span_start, span_end)
    assert sorted(bad.tolist()) == [i for i, w in enumerate(wrong) if w and not want[i]]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_zero_width_tokens_take_the_label_of_the_next_token(data):
    """mark(): a zero-width token is labelled as the next token of its row that spells text;
    special ids (BOS/EOS added around a text) never are."""
    tok_row, tok_start, tok_end, spans = _draw_rows(data, False)
    ids = data.draw(st.lists(st.integers(0, 1), min_size=len(tok_row), max_size=len(tok_row)))
    special = {0}
    n_rows = max(tok_row) + 1
    lengths = np.bincount(tok_row, minlength=n_rows)
    enc = Encoded(np.array(ids, dtype=np.int32), lengths, np.array(list(zip(tok_start, tok_end))).reshape(-1, 2))
    by_row = [[(a, b) for sr, a, b in spans if sr == r] for r in range(n_rows)]
    sup, bad = mark(enc, by_row, special)
    want = []
    for i, (r, a, b) in enumerate(zip(tok_row, tok_start, tok_end)):
        if a == b and ids[i] not in special:
            later = [j for j in range(i + 1, len(tok_row)) if tok_row[j] == r and tok_end[j] > tok_start[j]]
            want.append(bool(later) and _overlaps(r, tok_start[later[0]], tok_end[later[0]], spans))
        else:
            want.append(_overlaps(r, a, b, spans))
    assert sup.tolist() == want
    assert bad == []


# pieces of a made-up vocabulary: 0 is a special token that spells nothing (BOS), 1 a plain
# token that spells nothing, then text; 5 is two bytes (é), 6 holds a space inside
_PIECES = [b"", b"", b"a", b"bc", b" ", "\u00e9".encode(), b"d e", " \u00e9".encode()]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_spelled_marks_match_a_plain_reference(data):
    """Spelled.mark (byte stream, two searches per span) against the rule as a per-token loop
    over character offsets; a row whose ids spell one more leading space than its text (the
    tokenizer's added space) has that space outside the text. The independent check passes on
    the right marks and names the rows of wrong ones."""
    from datakit.tokenization.spelled import Spelled
    from datakit.tokenization.surface import Surfaces

    surfaces = Surfaces(_PIECES, byte_level=False)
    n_rows = data.draw(st.integers(1, 4))
    ids, lengths, texts, offsets, spans = [], [], [], [], []
    for _ in range(n_rows):
        row = data.draw(st.lists(st.integers(0, len(_PIECES) - 1), max_size=10))
        spelled = b"".join(_PIECES[i] for i in row).decode()
        drop = spelled.startswith(" ") and data.draw(st.booleans())
        text = spelled[1:] if drop else spelled
        pos, offs = -1 if drop else 0, []
        for i in row:
            n = len(_PIECES[i].decode())
            offs.append((max(pos, 0), max(pos + n, 0)))
            pos += n
        k = data.draw(st.integers(0, 2))
        bounds = sorted(data.draw(st.lists(st.integers(0, len(text)), min_size=2 * k, max_size=2 * k, unique=True))) \
            if len(text) >= 2 * k else []
        ids += row
        lengths.append(len(row))
        texts.append(text)
        offsets.append(offs)
        spans.append([(bounds[2 * j], bounds[2 * j + 1]) for j in range(len(bounds) // 2)])
    ids = np.array(ids, dtype=np.int32)
    sp = Spelled.of(surfaces, ids, np.array(lengths), texts, n_pre=0, n_post=0)
    assert sp is not None
    sup, bad = sp.mark(spans, [0], ids)
    want, k = [], 0
    for r in range(n_rows):
        row_ids = ids[k:k + lengths[r]].tolist()
        k += lengths[r]
        for i, (a, b) in enumerate(offsets[r]):
            if a == b and row_ids[i] != 0:
                later = [j for j in range(i + 1, len(row_ids)) if offsets[r][j][1] > offsets[r][j][0]]
                want.append(bool(later) and _overlaps(r, *offsets[r][later[0]], [(r, s, e) for s, e in spans[r]]))
            else:
                want.append(_overlaps(r, a, b, [(r, s, e) for s, e in spans[r]]))
    assert sup.tolist() == want
    assert bad == []
    spells = sp.end > sp.start
    if spells.any():  # flip one token that spells text: the check names its row
        t = int(np.flatnonzero(spells)[data.draw(st.integers(0, int(spells.sum()) - 1))])
        wrong = sup.copy()
        wrong[t] = ~wrong[t]
        assert sp.check(wrong, *sp.span_bytes(spans)) == [int(np.searchsorted(sp.row_start, t, side="right") - 1)]


def test_spelled_refuses_ids_that_do_not_spell_the_text():
    from datakit.tokenization.spelled import Spelled
    from datakit.tokenization.surface import Surfaces

    surfaces = Surfaces(_PIECES, byte_level=False)
    ids = np.array([2, 3], dtype=np.int32)
    assert Spelled.of(surfaces, ids, np.array([2]), ["abc"], n_pre=0, n_post=0) is not None
    assert Spelled.of(surfaces, ids, np.array([2]), ["abd"], n_pre=0, n_post=0) is None
    assert Spelled.of(surfaces, ids, np.array([2]), ["ab"], n_pre=0, n_post=0) is None
