"""Benchmark datakit against the peer baselines in ../shared/bench, measured in the same run.

usage: python bench/run.py [--shared ../shared] [--work /tmp/datakit-bench] [--mb 32] [--repeat 1]
                           [--only pretrain,memory,sft,dedup,chat,pack,formats,ray,cache]

Every command runs in its own process under a small wrapper that reports wall time and peak RSS
(ru_maxrss of the process tree). Ratios are taken between numbers of this run only. Targets:
  pretrain  datakit <= 1.1x raw tokenizing, and >= 1.8x faster than run_clm (block 1024, per_document, val 0.05)
  memory    datakit peak RSS on 4x the corpus <= 1.3x the peak on 1x
  sft       datakit >= 6x faster than alpaca-lora's data path (20,000 rows, cutoff 256, val 2000),
            and the same (input_ids, labels) for every row whose prompt fits in cutoff_len
  dedup     near-dedup of the 20,000 alpaca rows: a small fraction of the build's tokenizing time; and
            with a one-word edit of each real row planted, no row at or above the threshold (true
            Jaccard) of an earlier kept row gets through
  chat      datakit >= 3x faster than transformers' assistant mask through datasets.map (peer_chat_hf.py:
            20,000 conversations, ChatML, Llama 2 tokenizer with <|im_start|>/<|im_end|>, cutoff 1024),
            and the same (input_ids, labels) for every row
  pack      best-fit packing of the 20,000 alpaca rows at block_size 2048: >= 99% of the token slots
            filled, and TRL's pack_dataset(strategy="bfd") efficiency on the same rows; 1,000,000 rows
            (lengths drawn from those rows) planned in <= 2 s
  formats   each extra output format (parquet, megatron, mds) adds <= 10% to the wall time of the
            pretraining build and of the sft build (hf alone vs hf + the format, runs interleaved)
  ray       the pretraining build on the Ray engine (a local cluster): <= 1.3x the local engine's wall time
  cache     a rebuild of the 32 MB corpus (two sources) with nothing changed <= 1 s; the rebuild after
            touching one source, and the cache's size against the build's
The other sections build with an empty cache that keeps nothing (DATAKIT_CACHE_SIZE=0): first builds.
"""
from __future__ import annotations

import argparse
import json
import os
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
    import random
    import re
    import time

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


CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _chat_tokenizer(p: dict, work: Path) -> Path:
    """The Llama 2 folder with <|im_start|>/<|im_end|> added as special tokens, as the peer adds them."""
    out = work / "llama2_chatml"
    if not (out / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(p["tok"]))
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.save_pretrained(str(out))
    return out


def _compare_rows(peer_dir: Path, dk_dir: Path) -> tuple[int, int]:
    """Peer rows whose (input_ids, labels) datakit wrote too, of all the peer's rows."""
    from datasets import concatenate_datasets, load_from_disk

    import datakit

    ours = {}
    for split in datakit.load(dk_dir).values():
        for ids, labels in zip(split["input_ids"], split["labels"]):
            ours[tuple(ids)] = list(labels)
    peer = concatenate_datasets([load_from_disk(str(peer_dir / "train")), load_from_disk(str(peer_dir / "val"))])
    same = sum(ours.get(tuple(ids)) == list(labels) for ids, labels in zip(peer["input_ids"], peer["labels"]))
    return same, len(peer)


def bench_chat(args, p, bench, dk):
    work = args.work
    data = p["c1"] / "chat.jsonl"
    if not data.is_file():
        subprocess.run([sys.executable, args.shared / "bench" / "make_corpus.py", args.shared / "data", p["c1"],
                        "--mb", str(args.mb), "--sft-rows", "20000", "--chat-rows", "20000"], check=True)
    tok = _chat_tokenizer(p, work)
    template = work / "chatml.jinja"
    template.write_text(CHATML)
    peer = best([sys.executable, bench / "peer_chat_hf.py", data, p["tok"], work / "chat_hf", "--cutoff", "1024"],
                args.repeat, clean=[work / "chat_hf"])
    r = write_recipe(work, "dk_chat", {
        "tokenizer": str(tok), "chat_template": str(template),
        "sources": [{"path": str(data), "format": "messages"}],
        "transforms": [{"template": "chat"}, {"tokenize": {"cutoff_len": 1024}}],
        "split": {"val_set_size": 2000, "seed": 42}, "output": str(work / "dk_chat")})
    d = best([*dk, "build", r, "--overwrite", "--silent"], args.repeat)
    print(f"chat: {data} (20,000 conversations, {data.stat().st_size / 1e6:.0f} MB), ChatML, cutoff 1024, "
          f"Llama 2 tokenizer + <|im_start|>/<|im_end|>")
    for name, res in (("peer_chat_hf.py (num_proc 2)", peer), ("datakit build", d)):
        print(f"  {name:<30} wall {res['wall']:6.2f} s   peak RSS {res['rss_mb']:7.0f} MB")
    manifest = json.loads((work / "dk_chat" / "manifest.json").read_text())
    print(f"  datakit step thread-seconds: {manifest.get('timings')}")
    line("peer_chat_hf wall / datakit wall", f"{peer['wall'] / d['wall']:.2f}x", ">= 3.00x", peer["wall"] >= 3 * d["wall"])
    same, total = _compare_rows(work / "chat_hf", work / "dk_chat")
    line("rows identical to the peer (input_ids and labels)", f"{same}/{total}", "all", same == total)


def pack_recipe(work, data, tok, out, pack=None):
    steps = [{"template": "alpaca"}, {"tokenize": {"cutoff_len": 2048}}] + ([{"pack": pack}] if pack else [])
    return write_recipe(work, out.name, {
        "tokenizer": str(tok), "sources": [{"path": str(data), "format": "alpaca"}],
        "transforms": steps, "split": {"val_set_size": 0, "seed": 42}, "output": str(out)})


def bench_pack(args, p, dk, block=2048):
    import time

    import numpy as np
    from datasets import load_from_disk

    from datakit.transforms.binpack import best_fit_decreasing

    work = args.work
    data = p["c1"] / "alpaca.json"
    rows = best([*dk, "build", pack_recipe(work, data, p["tok"], work / "dk_rows"), "--overwrite", "--silent"],
                args.repeat)
    packed = best([*dk, "build", pack_recipe(work, data, p["tok"], work / "dk_packed",
                                             {"block_size": block, "strategy": "bfd"}),
                   "--overwrite", "--silent"], args.repeat)
    stats = json.loads((work / "dk_packed" / "manifest.json").read_text())["splits"]["train"]["packing"]
    print(f"pack: {data} (20,000 rows), alpaca template, cutoff 2048, no validation split, block_size {block}")
    print(f"  datakit build unpacked {rows['wall']:.2f} s, packed {packed['wall']:.2f} s: "
          f"{stats['rows_packed']:,} rows in {stats['packs']:,} packs, {stats['rows_per_pack']:.2f} rows per pack, "
          f"padding {stats['padding_tokens']:,} tokens")
    line("datakit packing efficiency (tokens / pack slots)", f"{100 * stats['efficiency']:.2f}%", ">= 99%",
         stats["efficiency"] >= 0.99)
    train = load_from_disk(str(work / "dk_rows" / "train")).select_columns(["input_ids", "labels"])
    lengths = np.array([len(ids) for ids in train["input_ids"]])
    _trl_pack(train, block, lengths, work / "dk_packed")
    rng = np.random.default_rng(0)
    many = rng.choice(lengths, size=1_000_000)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        order, per_pack = best_fit_decreasing(many, block)
        times.append(time.perf_counter() - t)
    print(f"  1,000,000 rows (lengths drawn from the 20,000): {len(per_pack):,} packs, efficiency "
          f"{100 * many.sum() / (len(per_pack) * block):.3f}%, best of 3 (in this process)")
    line("1,000,000 rows planned (best-fit decreasing)", f"{min(times):.2f} s", "<= 2 s", min(times) <= 2)


def _trl_pack(train, block, lengths, packed_dir):
    """TRL's pack_dataset on the same rows: as SFTTrainer calls it (map batches of 1,000 rows) and
    over the whole split at once, which must give datakit's packs."""
    import time

    from datasets import load_from_disk

    from datasets.utils.logging import disable_progress_bar

    try:
        from trl import pack_dataset
    except ImportError:
        print("  TRL is not installed: no comparison")
        return
    disable_progress_bar()
    for label, kwargs in (("map batches of 1,000 (SFTTrainer)", {}), ("whole split", {"batch_size": None})):
        t = time.perf_counter()
        theirs = pack_dataset(train, block, strategy="bfd", map_kwargs=kwargs)
        wall = time.perf_counter() - t
        eff = lengths.sum() / (len(theirs) * block)
        print(f"  TRL pack_dataset(strategy='bfd'), {label}: {len(theirs):,} packs, efficiency {100 * eff:.2f}%, "
              f"{wall:.2f} s")
    ours = load_from_disk(str(packed_dir / "train"))["seq_lens"]
    same = ours == theirs["seq_lengths"]
    line("datakit packs == TRL whole-split packs (seq_lens)", "same" if same else "differ", "same", same)


def _same_rows(a: Path, b: Path) -> bool:
    """The two builds hold the same rows in the same order (whatever their files' sharding)."""
    from datasets import load_from_disk

    da, db = load_from_disk(str(a)), load_from_disk(str(b))
    return list(da) == list(db) and all(
        da[s].data.table.select(da[s].column_names).equals(db[s].data.table.select(db[s].column_names))
        for s in da)


def bench_ray(args, p, dk, d1=None):
    """The pretraining build on the Ray engine against the local engine, on a running Ray cluster
    (started here with `ray start --head`, as users run it), with each Ray stage's throughput."""
    work = args.work
    corpus = p["c1"] / "corpus.jsonl"
    if d1 is None:
        d1 = best([*dk, "build", pretrain_recipe(work, corpus, p["tok"], work / "dk1"), "--overwrite", "--silent"],
                  args.repeat)
    ray_bin = Path(sys.executable).with_name("ray")
    port = "6390"
    # a throwaway cluster on loopback: Ray's token authentication (on by default since 2.5x) is off
    os.environ["RAY_AUTH_MODE"] = "disabled"
    subprocess.run([ray_bin, "start", "--head", "--port", port, "--num-cpus", str(os.cpu_count()),
                    "--include-dashboard", "false", "--disable-usage-stats"], check=True, capture_output=True)
    try:
        r = pretrain_recipe(work, corpus, p["tok"], work / "dk_ray")
        cmd = [*dk, "build", r, "--overwrite", "--silent", "--engine", "ray", "--address", f"127.0.0.1:{port}"]
        cold = measure(cmd)
        warm = best(cmd, args.repeat)
        data = p["c1"] / "alpaca.json"  # and the SFT corpus with near dedup, for identity only
        sft = {}
        for engine, out in (("local", work / "dk_sft_dedup"), ("ray", work / "dk_sft_ray")):
            extra = ["--engine", "ray", "--address", f"127.0.0.1:{port}"] if engine == "ray" else []
            sft[engine] = measure([*dk, "build", sft_recipe(work, data, p["tok"], out, dedup=True), "-o", out,
                                   "--overwrite", "--silent", *extra])
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True)
    local_m = json.loads((work / "dk1" / "manifest.json").read_text())
    ray_m = json.loads((work / "dk_ray" / "manifest.json").read_text())
    # the two recipes differ only in `output`, which the inputs fingerprint covers
    same = all(local_m[k] == ray_m[k] for k in ("counts", "splits", "sources", "inputs", "lengths"))
    same = same and _same_rows(work / "dk1", work / "dk_ray")
    mb = corpus.stat().st_size / 1e6
    workers = ray_m["engine"]["workers"]
    print(f"ray: {corpus} ({mb:.1f} MB), the pretraining recipe above, a local Ray cluster of {workers} workers "
          f"(`ray start --head`)")
    print(f"  local engine {d1['wall']:6.2f} s; ray engine {warm['wall']:6.2f} s with its workers warm, "
          f"{cold['wall']:6.2f} s on a cluster just started (workers import datakit and load the tokenizer)")
    for st in ray_m["engine"]["stages"]:
        busy = st["task_seconds"]
        rate = f"{mb / busy:7.2f} MB/s per worker" if busy and st["stage"] == "read + steps" else ""
        print(f"  stage {st['stage']:<44} {st['tasks']:>4} tasks  wall {st['wall_seconds']:6.2f} s  "
              f"task time {busy if busy is not None else float('nan'):6.2f} s  {rate}")
    line("ray engine wall / local engine wall (warm workers)", f"{warm['wall'] / d1['wall']:.2f}x", "<= 1.30x",
         warm["wall"] <= 1.3 * d1["wall"])
    line("same rows, order, counts and splits as the local build", "yes" if same else "no", "yes", same)
    sft_local = json.loads((work / "dk_sft_dedup" / "manifest.json").read_text())
    sft_ray = json.loads((work / "dk_sft_ray" / "manifest.json").read_text())
    same_sft = all(sft_local[k] == sft_ray[k] for k in ("counts", "splits", "sources", "inputs", "lengths"))
    same_sft = same_sft and _same_rows(work / "dk_sft_dedup", work / "dk_sft_ray")
    print(f"  sft with near dedup (20,000 alpaca rows): local {sft['local']['wall']:.2f} s, "
          f"ray {sft['ray']['wall']:.2f} s")
    line("sft + near dedup: same rows, order, counts as local", "yes" if same_sft else "no", "yes", same_sft)


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "datakit-bench")
    ap.add_argument("--mb", type=float, default=32)
    ap.add_argument("--repeat", type=int, default=1, help="runs per command; the fastest is kept")
    ap.add_argument("--only", default="pretrain,memory,sft,dedup,chat,pack,formats,ray,cache")
    args = ap.parse_args()
    args.shared = args.shared.resolve()
    bench = args.shared / "bench"
    p = prepare(args.shared, args.work, args.mb)
    dk = [sys.executable, "-m", "datakit"]
    os.environ["DATAKIT_CACHE_DIR"] = str(args.work / "cache-off")  # first builds: nothing kept
    os.environ["DATAKIT_CACHE_SIZE"] = "0"
    only = set(args.only.split(","))
    d1 = bench_pretrain(args, p, bench, dk) if "pretrain" in only else None
    if "memory" in only:
        bench_memory(args, p, dk, d1)
    sft = bench_sft(args, p, bench, dk) if "sft" in only else None
    if "dedup" in only:
        bench_dedup(args, p, dk, sft)
    if "chat" in only:
        bench_chat(args, p, bench, dk)
    if "pack" in only:
        bench_pack(args, p, dk)
    if "formats" in only:
        bench_formats(args, p, dk)
    if "ray" in only:
        bench_ray(args, p, dk, d1)
    if "cache" in only:
        bench_cache(args, p, dk)


if __name__ == "__main__":
    main()
