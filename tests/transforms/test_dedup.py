"""dedup: planted exact and near duplicates, across sources, with CJK text, and leak-free splits.

The reference for near duplicates is the Jaccard similarity of word 5-gram sets computed here
with Python sets, independently of the step's hashing, MinHash and banding."""
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

import datakit
from datakit.plan import merge_groups
from datakit.recipe import DedupOptions
from datakit.transforms.dedup import Dedup
from datakit.transforms.near import band_plan, shingle_hashes

BASE = [
    "The old lighthouse stood on a rock at the edge of the harbour and every evening the keeper lit the lamp.",
    "Bread needs flour, water, salt and time; the dough rests while the yeast makes small bubbles of gas.",
    "A train timetable is a promise written as a table where each row is a station and each column a train.",
    "Rivers carry sand from the mountains to the sea and over many years the sand settles in wide deltas.",
    "数据的质量比数量更重要。重复的样本会让模型记住答案，而不是学会推理，所以训练之前要去掉重复的数据。",
    "学习一门语言需要时间和耐心。每天读一点书，写几句话，慢慢地就会进步，语言模型也是这样学习的。",
]
EXACT = ["  THE OLD LIGHTHOUSE stood on a rock at the edge of the harbour and every evening the keeper lit the lamp. "]
NEAR = [
    "The old lighthouse stood on a rock at the edge of the harbour and every evening the keeper lit the lamps.",
    "数据的质量比数量更重要。重复的样本会让模型记住答案，而不是学会推理，所以训练之前要去掉重复数据。",
]
DISTINCT = [f"Distinct document number {i} talks about topic {i * 7} in its own words entirely." for i in range(8)]


def batch(texts, start=0):
    n = len(texts)
    return pa.RecordBatch.from_pydict({"text": texts, "_where": [f"f:{i}" for i in range(n)],
                                       "_source": pa.array(np.zeros(n, np.int32)),
                                       "_group": pa.array(np.arange(start, start + n, dtype=np.int64))})


@pytest.mark.parametrize("mode", ["exact", "near"])
def test_planted_duplicates_are_removed_across_batches(mode):
    step = Dedup(DedupOptions(mode=mode, threshold=0.7))
    first = step(batch(BASE + DISTINCT))[0]
    second = step(batch(EXACT + NEAR + ["A brand new sentence that nobody wrote before, about kites."], 100))[0]
    assert first.num_rows == len(BASE + DISTINCT)
    kept = second.column("text").to_pylist()
    assert EXACT[0] not in kept
    assert kept[-1].startswith("A brand new")
    if mode == "near":  # the case/space variant is caught by the shingles, which ignore both
        assert kept == [kept[-1]]
        assert step.stats["rows_dropped.near_duplicate"] == 3
    else:
        assert set(NEAR) <= set(kept)
        assert step.stats["rows_dropped.exact_duplicate"] == 1


def test_group_action_keeps_copies_in_the_first_rows_group():
    step = Dedup(DedupOptions(mode="near", threshold=0.7, action="group"))
    step(batch(BASE))
    out = step(batch(NEAR, 50))[0]
    assert out.num_rows == 2
    assert out.column("_group").to_pylist() == [0, 4]


def test_shingles_use_characters_for_cjk_and_words_otherwise():
    flat, offsets = shingle_hashes(["one two three four five six", "一二三四五六", "short", ""], 3)
    counts = np.diff(offsets.astype(np.int64)).tolist()
    assert counts == [4, 4, 1, 1]  # 6 words -> 4 trigrams; 6 characters -> 4; short rows: one shingle
    again, _ = shingle_hashes(["one two three four five six"], 3)
    assert again.tolist() == flat[:4].tolist()  # deterministic, independent of the batch


def test_dedup_runs_across_sources_and_no_validation_row_has_a_duplicate_in_train(tmp_path, make_recipe, hf_tokenizer):
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in BASE + DISTINCT))
    b.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in EXACT + NEAR + BASE[:2]))
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(a)}, {"path": str(b)}],
              "transforms": [{"dedup": {"mode": "near", "threshold": 0.7}}, {"tokenize": {}},
                             {"pack": {"block_size": 8, "remainder": "keep"}}],
              "split": {"val_set_size": 0.3, "seed": 3}, "output": "out"}
    m = datakit.run_build(make_recipe(recipe), silent=True).manifest
    dropped = m["counts"]["rows_dropped"]
    assert dropped["exact_duplicate"] + dropped["near_duplicate"] == len(EXACT + NEAR) + 2
    assert m["sources"][1]["rows_built"] == 0


def test_kept_near_duplicates_never_straddle_the_split(tmp_path, make_recipe, hf_tokenizer):
    rows = []
    for i in range(30):
        base = {"instruction": f"Describe item {i} of the catalogue in detail please", "input": "",
                "output": f"Item {i} is a wooden chair with four legs and a curved back, painted colour {i}."}
        rows.append(base)
        rows.append({**base, "output": base["output"] + " Really."})  # a near duplicate
        rows.append(dict(base))  # an exact duplicate
    src = tmp_path / "d.json"
    src.write_text(json.dumps(rows))
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(src), "format": "alpaca"}],
              "transforms": [{"dedup": {"mode": "near", "threshold": 0.6, "action": "group"}},
                             {"template": "alpaca_short"}, {"tokenize": {}}],
              "split": {"val_set_size": 0.25, "seed": 5}, "output": "out"}
    out = datakit.run_build(make_recipe(recipe), silent=True).path
    ds = datakit.load(out)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))
    train = [tok.decode(r) for r in ds["train"]["input_ids"]]
    val = [tok.decode(r) for r in ds["validation"]["input_ids"]]
    assert len(train) + len(val) == 90
    for v in val:
        item = v.split("Describe item ")[1].split(" ")[0]
        assert not any(f"Describe item {item} " in t for t in train)


def ref_shingles(text: str, n: int = 5) -> set:
    """Word n-grams of the lower-cased text (a text shorter than n words is one shingle)."""
    words = text.lower().split()
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def ref_jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = ref_shingles(a, n), ref_shingles(b, n)
    return len(sa & sb) / len(sa | sb)


VOCAB = [f"w{i}" for i in range(3000)]


def planted(seed: int, bases: int, repeats: int):
    """``bases`` unrelated rows of 20 to 160 words, each repeated ``repeats`` times (shuffled), and
    for each base one planted copy with 1 to 4 words replaced, somewhere after the base's first
    copy: similarities from ~0.5 to ~0.97, many near 0.8. Returns (texts, base texts, plant texts)."""
    rng = np.random.default_rng(seed)
    base = [" ".join(rng.choice(VOCAB, size=int(rng.integers(20, 161)))) for _ in range(bases)]
    order = [int(i) for _ in range(repeats) for i in rng.permutation(bases)]
    keyed = [(float(k), base[i]) for k, i in enumerate(order)]
    first = {i: order.index(i) for i in range(bases)}
    plants = []
    for i in range(bases):
        words = base[i].split()
        for pos in rng.choice(len(words), size=int(rng.integers(1, 5)), replace=False):
            words[pos] = f"edit{i}x{pos}"
        plants.append(" ".join(words))
        keyed.append((float(rng.uniform(first[i] + 0.5, len(order))), plants[-1]))
    return [t for _, t in sorted(keyed)], base, plants


def run_step(step, texts, size=97):
    kept, groups = [], []
    for start in range(0, len(texts), size):
        out = step(batch(texts[start:start + size], start))[0]
        kept += out.column("text").to_pylist()
        groups += out.column("_group").to_pylist()
    return kept, np.array(groups)


@pytest.mark.parametrize("threshold", [0.6, 0.8, 0.9])
def test_every_planted_edit_at_or_above_the_threshold_is_caught_and_no_other(threshold):
    """Recall and precision on planted edits at many similarities, against true Jaccard."""
    texts, base, plants = planted(7, bases=300, repeats=3)
    step = Dedup(DedupOptions(mode="near", threshold=threshold))
    kept, _ = run_step(step, texts)
    base_texts = set(base)
    base_sets = [ref_shingles(b) for b in base]
    holders = {}  # shingle -> the bases that have it: a plant's Jaccard is 0 with every other base
    for i, b in enumerate(base_sets):
        for sh in b:
            holders.setdefault(sh, set()).add(i)
    sims = []
    for p in map(ref_shingles, plants):
        near = set().union(*(holders.get(sh, ()) for sh in p))
        sims.append(max([len(p & base_sets[i]) / len(p | base_sets[i]) for i in near], default=0.0))
    sims = np.array(sims)
    assert len(plants) == 300 and sims.min() < 0.7 and sims.max() > 0.9
    assert ((sims >= threshold - 0.05) & (sims < threshold + 0.05)).sum() >= 20  # many pairs near the threshold
    caught = np.array([t not in kept for t in plants])
    for lo, hi in [(0, 0.7), (0.7, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 1.01)]:
        bin_ = (sims >= lo) & (sims < hi)
        above = bin_ & (sims >= threshold)
        assert caught[above].all(), f"recall in [{lo}, {hi}): {caught[above].mean():.3f}"
        assert not caught[bin_ & (sims < threshold)].any(), f"false positives in [{lo}, {hi})"
    assert set(kept) == base_texts | {t for t, s in zip(plants, sims) if s < threshold}
    assert step.stats["rows_dropped.exact_duplicate"] == 600


def test_group_action_puts_every_similar_pair_in_one_group():
    """With action: group every row is kept, and every pair at or above the threshold ends in one
    group once the plan applies the merges, also when a row links two groups formed earlier."""
    texts, base, plants = planted(11, bases=120, repeats=2)
    a = " ".join(f"a{i}" for i in range(30))  # words 0-29, 15-44 and 0-44: J = 0.27, 0.63, 0.63
    b = " ".join(f"a{i}" for i in range(15, 45))
    bridge = " ".join(f"a{i}" for i in range(45))
    assert ref_jaccard(a, b) < 0.6 <= min(ref_jaccard(bridge, a), ref_jaccard(bridge, b))
    texts = [a] + texts[:150] + [b] + texts[150:] + [bridge]  # a and b go out in different groups
    step = Dedup(DedupOptions(mode="near", threshold=0.6, action="group"))
    kept, groups = run_step(step, texts)
    assert kept == texts
    groups = merge_groups(groups, step.group_merges())
    sets = [ref_shingles(t) for t in texts]
    parent = list(range(len(texts)))  # the reference: components of the graph of pairs >= 0.6

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(texts)):
        for j in range(i):
            if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= 0.6:
                parent[find(i)] = find(j)
    components = [find(i) for i in range(len(texts))]
    same_group = groups[:, None] == groups[None, :]
    assert (same_group == (np.array(components)[:, None] == np.array(components)[None, :])).all()
    assert groups[0] == groups[151] == groups[-1]


@pytest.mark.parametrize("threshold, num_perm", [(0.5, 128), (0.8, 128), (0.9, 128), (0.8, 64), (0.95, 256),
                                                 (0.3, 16)])
def test_bands_miss_a_pair_at_the_threshold_rarely(threshold, num_perm):
    bands, rows = band_plan(threshold, num_perm)
    assert bands * rows <= num_perm
    miss = (1 - threshold ** rows) ** bands  # the S-curve: no band agrees
    if rows > 1:
        assert miss <= 1e-6
        assert (1 - threshold ** (rows + 1)) ** (num_perm // (rows + 1)) > 1e-6  # the fewest candidates
    else:
        assert bands == num_perm



@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), min_size=0, max_size=12),
                min_size=1, max_size=25),
       st.sampled_from([0.4, 0.6, 0.8]), st.integers(1, 7), st.sampled_from([1, 2, 3]))
def test_kept_rows_are_pairwise_below_the_threshold_and_each_drop_has_a_kept_match(rows, threshold, size, ngram):
    texts = [" ".join(r) for r in rows]
    step = Dedup(DedupOptions(mode="near", threshold=threshold, ngram=ngram))
    kept, _ = run_step(step, texts, size=size)
    sets = {t: ref_shingles(t, ngram) for t in texts}
    sim = lambda x, y: len(sets[x] & sets[y]) / len(sets[x] | sets[y])  # noqa: E731
    for i, x in enumerate(kept):
        assert all(sim(x, y) < threshold for y in kept[:i]), "two kept rows are near duplicates"
    it = iter(kept)
    seen = []
    nxt = next(it, None)
    for t in texts:  # the kept rows are the texts in order; each dropped one matches an earlier kept row
        if t == nxt:
            seen.append(t)
            nxt = next(it, None)
        else:
            assert any(sim(t, y) >= threshold for y in seen), "a row was dropped without a kept match"


@pytest.mark.parametrize("action", ["drop", "group"])
def test_no_validation_row_has_a_near_duplicate_in_train(tmp_path, make_recipe, hf_tokenizer, action):
    """The split promise, end to end: repeated alpaca rows and planted edits near the threshold."""
    from transformers import AutoTokenizer

    texts, _, _ = planted(3, bases=80, repeats=2)
    src = tmp_path / "d.json"
    src.write_text(json.dumps([{"instruction": "Repeat the words", "input": "", "output": t} for t in texts]))
    recipe = {"tokenizer": str(hf_tokenizer), "sources": [{"path": str(src), "format": "alpaca"}],
              "transforms": [{"dedup": {"mode": "near", "threshold": 0.8, "action": action}},
                             {"template": "alpaca"}, {"tokenize": {}}],
              "split": {"val_set_size": 0.3, "seed": 1}, "output": "out"}
    ds = datakit.load(datakit.run_build(make_recipe(recipe), silent=True).path)
    tok = AutoTokenizer.from_pretrained(str(hf_tokenizer))

    def outputs(split):
        return [tok.decode(r, skip_special_tokens=True).split("### Response:")[1].strip()
                for r in ds[split]["input_ids"]]

    train, val = outputs("train"), outputs("validation")
    assert set(train + val) <= set(texts) and len(val) > 20
    if action == "group":
        assert len(train) + len(val) == len(texts)
    full = lambda t: ref_shingles(f"Repeat the words\n\n{t}")  # noqa: E731 - the fields dedup reads
    train_sets = [full(t) for t in train]
    for v in map(full, val):
        assert all(len(v & t) / len(v | t) < 0.8 for t in train_sets)
