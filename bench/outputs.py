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
    _bench_remix(args, work, p, dk)


def _bench_remix(args, work: Path, p, dk):
    """Re-mixing two finished builds (``format: build``, weights 1:3, a new split) against building
    the same mixture from the text again (no cache): the time a build source saves."""
    def text(name):
        return {"path": str(work / name), "format": "text"}

    body = {"tokenizer": str(p["tok"]), "transforms": [{"tokenize": {}}, {"pack": {"block_size": 1024}}],
            "split": {"val_set_size": 0.05, "seed": 42}}
    for name in ("a", "b"):
        write_recipe(work, f"part_{name}", {**body, "sources": [text(f"{name}.jsonl")], "output": str(work / name)})
        measure([*dk, "build", work / f"part_{name}.yaml", "--overwrite", "--silent", "--no-cache"])
    weights = {"a": 1, "b": 3}
    remix = write_recipe(work, "remix", {
        "tokenizer": str(p["tok"]), "split": {"val_set_size": 0.05, "seed": 7}, "output": str(work / "remix"),
        "sources": [{"path": str(work / n), "format": "build", "weight": w} for n, w in weights.items()]})
    again = write_recipe(work, "again", {**body, "split": {"val_set_size": 0.05, "seed": 7}, "output": str(work / "again"),
                                         "sources": [{**text(f"{n}.jsonl"), "weight": w} for n, w in weights.items()]})
    rounds = max(args.repeat, 2)
    mixed = best([*dk, "build", remix, "--overwrite", "--silent", "--no-cache"], rounds)
    tokenized = best([*dk, "build", again, "--overwrite", "--silent", "--no-cache"], rounds)
    print(f"  re-mix two builds (format: build, weights 1:3)  wall {mixed['wall']:6.2f} s   "
          f"peak RSS {mixed['rss_mb']:7.0f} MB")
    print(f"  the same mixture from the text (no cache)      wall {tokenized['wall']:6.2f} s   "
          f"peak RSS {tokenized['rss_mb']:7.0f} MB")
    line("re-mix two build sources / tokenize them again", f"{mixed['wall'] / tokenized['wall']:.2f}x", "< 1x",
         mixed["wall"] < tokenized["wall"])
