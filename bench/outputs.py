"""Output formats (hf alone vs hf + each format) and the tokenized-rows cache."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from common import best, line, measure, pretrain_recipe, sft_recipe, write_recipe


def bench_formats(args, p, dk):
    """Each extra format's cost: a build with hf alone against hf + that format, the runs interleaved
    (``--repeat`` rounds, at least 2, the fastest of each kept). CPU seconds (user + sys of the build's
    process tree) are compared too: on a shared machine they move far less than wall time, and they
    bound the wall cost of a format from above (its writer runs in a thread of its own)."""
    work = args.work
    cases = {"pretrain": (lambda name, formats: pretrain_recipe(work, p["c1"] / "corpus.jsonl", p["tok"],
                                                                  work / name, formats),
                          ["parquet", "megatron", "mds"]),
             "sft": (lambda name, formats: sft_recipe(work, p["c1"] / "alpaca.json", p["tok"], work / name,
                                                      formats=formats), ["parquet", "mds"])}
    rounds = max(args.repeat, 2)
    for kind, (make, extra) in cases.items():
        variants = {"hf": ["hf"], **{f"hf+{f}": ["hf", f] for f in extra}}
        recipes = {name: make(f"fmt_{kind}_{name.replace('+', '_')}", formats) for name, formats in variants.items()}
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for _ in range(rounds):
            for name, recipe in recipes.items():
                run = measure([*dk, "build", recipe, "--overwrite", "--silent"])
                wall[name] = min(wall.get(name, run["wall"]), run["wall"])
                cpu[name] = min(cpu.get(name, run["cpu"]), run["cpu"])
        what = "32 MB corpus, block 1024" if kind == "pretrain" else "20,000 alpaca rows, cutoff 256"
        print(f"formats ({kind}: {what}): fastest of {rounds} interleaved runs")
        for name in recipes:
            print(f"  {name:<30} wall {wall[name]:6.2f} s   cpu {cpu[name]:6.2f} s")
        for f in extra:
            line(f"{kind}: hf+{f} wall / hf wall", f"{wall[f'hf+{f}'] / wall['hf']:.3f}x", "<= 1.10x",
                 wall[f"hf+{f}"] <= 1.10 * wall["hf"])
            line(f"{kind}: hf+{f} cpu / hf cpu", f"{cpu[f'hf+{f}'] / cpu['hf']:.3f}x", "<= 1.10x",
                 cpu[f"hf+{f}"] <= 1.10 * cpu["hf"])


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def bench_cache(args, p, dk):
    """Cold build into an empty cache, rebuild with nothing changed, rebuild after one of the two
    sources (the corpus cut in halves) gets one more line."""
    work = args.work / "cache"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    lines = (p["c1"] / "corpus.jsonl").read_bytes().splitlines(keepends=True)
    (work / "a.jsonl").write_bytes(b"".join(lines[:len(lines) // 2]))
    (work / "b.jsonl").write_bytes(b"".join(lines[len(lines) // 2:]))
    recipe = write_recipe(work, "cached", {
        "tokenizer": str(p["tok"]), "sources": [{"path": str(work / n), "format": "text"} for n in ("a.jsonl", "b.jsonl")],
        "transforms": [{"tokenize": {}}, {"pack": {"block_size": 1024, "eos": "per_document"}}],
        "split": {"val_set_size": 0.05, "seed": 42}, "output": str(work / "out")})
    cmd = [*dk, "build", recipe, "--overwrite", "--silent", "--cache-dir", work / "entries", "--cache-size", "100GB"]
    cold = measure(cmd)
    warm = best(cmd, max(args.repeat, 3))
    with open(work / "b.jsonl", "ab") as f:
        f.write(lines[0])
    touched = measure(cmd)
    hits = [s["hit"] for s in json.loads((work / "out" / "manifest.json").read_text())["cache"]["sources"]]
    cache_mb, build_mb = _size(work / "entries") / 1e6, _size(work / "out") / 1e6
    print(f"cache: {p['c1'] / 'corpus.jsonl'} cut into two sources, Llama 2 tokenizer, block 1024")
    for name, r in (("cold (empty cache)", cold), ("rebuild, nothing changed", warm), ("rebuild, b.jsonl touched", touched)):
        print(f"  {name:<30} wall {r['wall']:6.2f} s   peak RSS {r['rss_mb']:7.0f} MB")
    print(f"  after touching b.jsonl, hits per source: {hits}")
    print(f"  cache {cache_mb:.1f} MB, build {build_mb:.1f} MB ({cache_mb / build_mb:.2f}x)")
    line("rebuild with nothing changed", f"{warm['wall']:.2f} s", "<= 1 s", warm["wall"] <= 1.0)
    line("rebuild after touching one source / cold", f"{touched['wall'] / cold['wall']:.2f}x", "< 1x",
         touched["wall"] < cold["wall"])
