"""Shards of a distributed build: byte ranges of JSON Lines files read exactly like the whole file."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

import hashlib

from datakit.engines.shards import number_ranges, plan_shards
from datakit.recipe import from_dict
from datakit.sources import FileInfo, read_part, read_source


def _recipe(tmp_path, files: list[str]):
    return from_dict({"tokenizer": "unused", "sources": [{"path": f, "format": "prompt_completion"} for f in files],
                      "transforms": [{"template": "alpaca"}, {"tokenize": {}}], "output": str(tmp_path / "out")}, base_dir=tmp_path)


def _read_ranges(recipe, shards):
    rows = []
    for spec in shards:
        info = FileInfo(path=spec.path)
        for batch in read_part(recipe.sources[spec.source], __import__("pathlib").Path(spec.path), info,
                               index=spec.source, first_row=0, span=spec.span):
            rows += list(zip(batch.column("_where").to_pylist(), batch.column("prompt").to_pylist()))
    return rows


@settings(max_examples=40, deadline=None)
@given(lines=st.lists(st.one_of(st.text(max_size=40), st.just("")), min_size=1, max_size=60),
       shard_bytes=st.integers(min_value=1, max_value=400), crlf=st.booleans())
def test_ranges_read_the_same_records_with_the_same_lines(tmp_path_factory, lines, shard_bytes, crlf):
    tmp = tmp_path_factory.mktemp("shards")
    end = "\r\n" if crlf else "\n"
    body = "".join((json.dumps({"prompt": t, "completion": "x"}) if t or i % 3 else "") + end
                   for i, t in enumerate(lines))
    if not any(lines):
        body += json.dumps({"prompt": "last", "completion": "x"}) + end
    path = tmp / "data.jsonl"
    path.write_bytes(body.encode("utf-8"))
    recipe = _recipe(tmp, [str(path)])
    shards, files = plan_shards(recipe, shard_bytes=shard_bytes)
    assert files == [str(path)]
    # the ranges tile the file, and each starts where a line starts
    spans = [(s.start, s.end) for s in shards]
    if spans[0][1] is not None:
        assert spans[0][0] == 0 and spans[-1][1] == len(body.encode())
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert all(body.encode()[s - 1:s] == b"\n" for s, _ in spans[1:])
    numbered, sha = number_ranges(shards)
    assert sha == ({str(path): hashlib.sha256(body.encode()).hexdigest()} if spans[0][1] is not None else {})
    whole = []
    for batch in read_source(recipe.sources[0], files=[]):
        whole += list(zip(batch.column("_where").to_pylist(), batch.column("prompt").to_pylist()))
    assert _read_ranges(recipe, numbered) == whole


def test_enough_shards_for_every_worker_numbered_and_hashed_whole(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": "c"}) + "\n" for i in range(100000)))
    small = tmp_path / "b.jsonl"
    small.write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    recipe = _recipe(tmp_path, [str(path), str(small)])
    shards, files = plan_shards(recipe, min_shards=8)
    assert len([s for s in shards if s.path == str(path)]) >= 7
    assert shards[-1].path == str(small) and shards[-1].end is None
    assert [s.index for s in shards] == list(range(len(shards)))
    numbered, sha = number_ranges(shards)
    assert sha == {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}
    ranges = [s for s in numbered if s.path == str(path)]
    assert [s.first_line for s in ranges] == [1 + path.read_bytes()[:s.start].count(b"\n") for s in ranges]
