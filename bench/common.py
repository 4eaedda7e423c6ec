"""Shared pieces of the benchmark: a command under a timer, the corpora, recipes, result lines."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WRAP = textwrap.dedent("""
    import json, resource, subprocess, sys, time
    t = time.perf_counter()
    p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss, cpu = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime
    print(json.dumps({"wall": wall, "cpu": cpu, "rss_mb": rss, "code": p.returncode, "out": p.stdout[-2000:], "err": p.stderr[-3000:]}))
""")


def measure(cmd: list[str], *, clean: list[Path] = ()) -> dict:
    for c in clean:
        shutil.rmtree(c, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", WRAP, *map(str, cmd)], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout)
    if res["code"] != 0:
        raise SystemExit(f"command failed: {' '.join(map(str, cmd))}\n{res['err']}")
    return res


def best(cmd, repeat, clean=()):
    runs = [measure(cmd, clean=clean) for _ in range(repeat)]
    return min(runs, key=lambda r: r["wall"])


def prepare(shared: Path, work: Path, mb: float) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    paths = {"c1": work / "c1", "c4": work / "c4", "tok": work / "llama2_hf"}
    if not (paths["c1"] / "corpus.jsonl").is_file():
        subprocess.run([sys.executable, shared / "bench" / "make_corpus.py", shared / "data", paths["c1"],
                        "--mb", str(mb), "--sft-rows", "20000"], check=True)
    if not (paths["c4"] / "corpus.jsonl").is_file():
        subprocess.run([sys.executable, shared / "bench" / "make_corpus.py", shared / "data", paths["c4"],
                        "--mb", str(4 * mb), "--sft-rows", "10"], check=True)
    if not (paths["tok"] / "tokenizer.json").is_file():
        subprocess.run([sys.executable, shared / "bench" / "make_llama2_hf.py", paths["tok"]], check=True)
    return paths


def write_recipe(work: Path, name: str, body: dict) -> Path:
    import yaml

    p = work / f"{name}.yaml"
    p.write_text(yaml.safe_dump(body, sort_keys=False))
    return p


def pretrain_recipe(work, corpus, tok, out, formats=None):
    return write_recipe(work, out.name, {
        "tokenizer": str(tok), "sources": [{"path": str(corpus), "format": "text"}],
        "transforms": [{"tokenize": {}}, {"pack": {"block_size": 1024, "eos": "per_document"}}],
        "split": {"val_set_size": 0.05, "seed": 42},
        "output": str(out) if formats is None else {"path": str(out), "formats": formats}})


def sft_recipe(work, data, tok, out, dedup=False, formats=None):
    steps = [{"dedup": {"mode": "near", "threshold": 0.8}}] if dedup else []
    steps += [{"template": "alpaca"}, {"tokenize": {"cutoff_len": 256, "add_eos_token": True,
                                                    "train_on_inputs": False}}]
    # near-dedup leaves ~2,000 of the 20,000 rows (the corpus repeats 1,999 real rows ten times)
    return write_recipe(work, out.name, {
        "tokenizer": str(tok), "sources": [{"path": str(data), "format": "alpaca"}],
        "transforms": steps, "split": {"val_set_size": 200 if dedup else 2000, "seed": 42},
        "output": str(out) if formats is None else {"path": str(out), "formats": formats}})


def line(label, value, target, ok):
    print(f"  {label:<58} {value:>10}   target {target:<10} {'PASS' if ok else 'FAIL'}")
