"""Instruction rows: datakit against alpaca-lora's data path, and near-dedup (cost and planted leaks)."""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from common import best, line, sft_recipe


def _compare_with_alpaca_lora(peer_dir: Path, dk_dir: Path, cutoff: int) -> tuple[int, int, int]:
    """Rows of the peer whose prompt fits in cutoff: how many have datakit's exact (input_ids, labels)."""
    from datasets import concatenate_datasets, load_from_disk

    import datakit

    dk = datakit.load(dk_dir)
    ours = {}
    for split in dk.values():
        for ids, labels in zip(split["input_ids"], split["labels"]):
            ours[tuple(ids)] = list(labels)
    peer = concatenate_datasets([load_from_disk(str(peer_dir / "train")), load_from_disk(str(peer_dir / "val"))])
    checked = same = skipped = 0
    for ids, labels in zip(peer["input_ids"], peer["labels"]):
        ids, labels = list(ids), list(labels)
        prompt_len = next((i for i, l in enumerate(labels) if l != -100), len(labels))
        if prompt_len >= cutoff - 1:
            skipped += 1
            continue
        checked += 1
        same += ours.get(tuple(ids)) == labels
    return checked, same, skipped


def bench_sft(args, p, bench, dk):
    work = args.work
    data = p["c1"] / "alpaca.json"
    template = args.shared / "data" / "templates" / "alpaca.json"
    peer = best([sys.executable, bench / "peer_alpaca_lora.py", data, p["tok"], template, work / "alpaca_lora"],
                args.repeat, clean=[work / "alpaca_lora"])
    r = sft_recipe(work, data, p["tok"], work / "dk_sft")
    d = best([*dk, "build", r, "--overwrite", "--silent"], args.repeat)
    print(f"sft: {data} (20,000 rows), alpaca template, cutoff 256, val 2000, Llama 2 tokenizer")
    for name, res in (("peer_alpaca_lora.py", peer), ("datakit build", d)):
        print(f"  {name:<30} wall {res['wall']:6.2f} s   peak RSS {res['rss_mb']:7.0f} MB")
    line("alpaca-lora wall / datakit wall", f"{peer['wall'] / d['wall']:.2f}x", ">= 6.00x", peer["wall"] >= 6 * d["wall"])
    checked, same, skipped = _compare_with_alpaca_lora(work / "alpaca_lora", work / "dk_sft", 256)
    line(f"rows identical to alpaca-lora ({skipped} with prompt >= cutoff skipped)", f"{same}/{checked}",
         "all", same == checked)
    return d


_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef"
_SPACE = "\x00-\x20\xa0\u3000\u2000-\u200b"


def _ref_shingles(text: str, n: int = 5) -> set:
    """The reference shingle set: lower-cased words (a CJK character is a word), as word n-grams."""
    import re

    words = re.findall(f"[{_CJK}]|[^{_SPACE}{_CJK}]+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)} if len(words) >= n else {tuple(words)}


def _planted_leaks(data: Path, threshold: float = 0.8) -> None:
    """The alpaca corpus (1,999 real rows seen ten times, with "(k) " before the instruction) plus
    a one-word edit of each real row, through the dedup step in this process: how many rows at or
    above the threshold of an earlier kept row of their family (the copies and the edit of one
    real row) are let through, by true Jaccard on word 5-grams."""
    import re

    import numpy as np
    import pyarrow as pa

    from datakit.recipe import DedupOptions
    from datakit.transforms.dedup import Dedup

    rows = json.loads(data.read_text("utf-8"))
    keys: dict[tuple, int] = {}  # a real row: its fields without the "(k) " of the copies
    family = [keys.setdefault((re.sub(r"^\(\d+\) ", "", r["instruction"]), r.get("input"), r["output"]), len(keys))
              for r in rows]
    real = len(keys)
    rng = random.Random(0)
    for i in range(real):
        r = dict(rows[i])
        words = r["output"].split(" ")
        k = rng.randrange(len(words))
        words[k] = "planted" if words[k] != "planted" else "edited"
        r["output"] = " ".join(words)
        at = rng.randrange(i + 1, len(rows) + 1)
        rows.insert(at, r)
        family.insert(at, i)
    text = ["\n".join((r["instruction"], r.get("input") or "", r["output"])) for r in rows]
    step = Dedup(DedupOptions(mode="near", threshold=threshold))
    kept = np.zeros(len(rows), dtype=bool)
    t = time.perf_counter()
    for start in range(0, len(rows), 500):
        part = rows[start:start + 500]
        n = len(part)
        batch = pa.RecordBatch.from_pydict({
            "instruction": [r["instruction"] for r in part], "input": [r.get("input") or "" for r in part],
            "output": [r["output"] for r in part], "_where": [f"r{start + i}" for i in range(n)],
            "_source": pa.array(np.zeros(n, np.int32)), "_group": pa.array(np.arange(start, start + n))})
        out = step(batch)[0]
        kept[out.column("_group").to_numpy()] = True
    seconds = time.perf_counter() - t
    leaked = pairs = 0
    members: dict[int, list] = {}
    for i, f in enumerate(family):
        members.setdefault(f, []).append(i)
    for idx in members.values():
        sets = {i: _ref_shingles(text[i]) for i in idx}
        for a, i in enumerate(idx):
            near = [j for j in idx[:a] if kept[j] and len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold]
            pairs += bool(near)
            leaked += bool(near) and bool(kept[i])
    print(f"  planted: {len(rows):,} rows ({real:,} real rows, ~10 copies each, + {real:,} one-word edits); dedup step "
          f"{seconds:.2f} s in this process; {int((~kept).sum()):,} dropped")
    line(f"rows >= {threshold} (true Jaccard) of an earlier kept row, let through", f"{leaked}/{pairs}", "0",
         leaked == 0)


def bench_dedup(args, p, dk, sft=None):
    work = args.work
    data = p["c1"] / "alpaca.json"
    if sft is None:
        sft = best([*dk, "build", sft_recipe(work, data, p["tok"], work / "dk_sft"), "--overwrite", "--silent"],
                   args.repeat)
    r = sft_recipe(work, data, p["tok"], work / "dk_sft_dedup", dedup=True)
    d = best([*dk, "build", r, "--overwrite", "--silent"], args.repeat)
    manifest = json.loads((work / "dk_sft_dedup" / "manifest.json").read_text())
    removed = manifest["counts"].get("rows_dropped", {}).get("near_duplicate", 0)
    extra = d["wall"] - sft["wall"]
    print(f"dedup: near (MinHash LSH, threshold 0.8) on the 20,000 alpaca rows; removed {removed} rows")
    print(f"  build without dedup {sft['wall']:.2f} s, with dedup {d['wall']:.2f} s: dedup adds {extra:.2f} s")
    base = json.loads((work / "dk_sft" / "manifest.json").read_text()) if (work / "dk_sft").exists() else {}
    tokenize_s = base.get("timings", {}).get("tokenize")
    dedup_s = manifest.get("timings", {}).get("dedup")
    if tokenize_s and dedup_s is not None:
        print(f"  dedup step {dedup_s:.2f} thread-s (one thread); tokenize step of the build without dedup "
              f"{tokenize_s:.2f} thread-s (two batches at a time); that build's wall {sft['wall']:.2f} s")
        line("dedup / tokenize (thread-seconds, the manifests' timings)", f"{dedup_s / tokenize_s:.2f}x",
             "<= 0.30x", dedup_s <= 0.3 * tokenize_s)
    _planted_leaks(data)
