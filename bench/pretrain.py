"""Pretraining: datakit against raw tokenizing and run_clm, and memory on 4x the corpus."""
from __future__ import annotations

import sys

from common import best, line, pretrain_recipe


def bench_pretrain(args, p, bench, dk):
    work = args.work
    raw = best([sys.executable, bench / "peer_raw_tokenize.py", p["c1"] / "corpus.jsonl", p["tok"]], args.repeat)
    clm = best([sys.executable, bench / "peer_run_clm.py", p["c1"] / "corpus.jsonl", p["tok"], work / "clm"],
               args.repeat, clean=[work / "clm"])
    r1 = pretrain_recipe(work, p["c1"] / "corpus.jsonl", p["tok"], work / "dk1")
    d1 = best([*dk, "build", r1, "--overwrite", "--silent"], args.repeat)
    print(f"pretrain: {p['c1'] / 'corpus.jsonl'} ({(p['c1'] / 'corpus.jsonl').stat().st_size / 1e6:.1f} MB), "
          f"Llama 2 tokenizer, block 1024, per_document, val 0.05")
    for name, r in (("peer_raw_tokenize.py", raw), ("peer_run_clm.py (num_proc 2)", clm), ("datakit build", d1)):
        print(f"  {name:<30} wall {r['wall']:6.2f} s   peak RSS {r['rss_mb']:7.0f} MB   {r['out'].strip()[-60:]}")
    line("datakit wall / raw tokenize wall", f"{d1['wall'] / raw['wall']:.2f}x", "<= 1.10x", d1["wall"] <= 1.1 * raw["wall"])
    line("run_clm wall / datakit wall", f"{clm['wall'] / d1['wall']:.2f}x", ">= 1.80x", clm["wall"] >= 1.8 * d1["wall"])
    return d1


def bench_memory(args, p, dk, d1=None):
    work = args.work
    if d1 is None:
        d1 = best([*dk, "build", pretrain_recipe(work, p["c1"] / "corpus.jsonl", p["tok"], work / "dk1"),
                   "--overwrite", "--silent"], args.repeat)
    r4 = pretrain_recipe(work, p["c4"] / "corpus.jsonl", p["tok"], work / "dk4")
    d4 = best([*dk, "build", r4, "--overwrite", "--silent"], args.repeat)
    print(f"memory: 1x {(p['c1'] / 'corpus.jsonl').stat().st_size / 1e6:.0f} MB vs 4x "
          f"{(p['c4'] / 'corpus.jsonl').stat().st_size / 1e6:.0f} MB corpus")
    print(f"  datakit 1x: wall {d1['wall']:6.2f} s, peak RSS {d1['rss_mb']:.0f} MB; "
          f"4x: wall {d4['wall']:6.2f} s, peak RSS {d4['rss_mb']:.0f} MB")
    line("peak RSS 4x / peak RSS 1x", f"{d4['rss_mb'] / d1['rss_mb']:.2f}x", "<= 1.30x", d4["rss_mb"] <= 1.3 * d1["rss_mb"])
