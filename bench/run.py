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
            and the same (input_ids, labels) for every row (the two run in turn, the fastest of each)
  pack      best-fit packing of the 20,000 alpaca rows at block_size 2048: >= 99% of the token slots
            filled, and TRL's pack_dataset(strategy="bfd") efficiency on the same rows; 1,000,000 rows
            (lengths drawn from those rows) planned in <= 2 s
  formats   each extra output format (parquet, megatron, mds) adds <= 10% to the wall time of the
            pretraining build and of the sft build (hf alone vs hf + the format, runs interleaved)
  ray       the pretraining build on the Ray engine (a local cluster): <= 1.3x the local engine's wall time
  cache     a rebuild of the 32 MB corpus (two sources) with nothing changed <= 1 s; the rebuild after
            touching one source, and the cache's size against the build's; re-mixing the two halves
            as build sources (format: build) against tokenizing them again
The other sections build with an empty cache that keeps nothing (DATAKIT_CACHE_SIZE=0): first builds.
"""
from __future__ import annotations

import argparse
import compileall
import os
import sys
from pathlib import Path

from chat import bench_chat
from cluster import bench_ray
from common import ROOT, prepare
from outputs import bench_cache, bench_formats
from pack import bench_pack
from pretrain import bench_memory, bench_pretrain
from sft import bench_dedup, bench_sft


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
    # datakit as pip installs it: with its bytecode compiled. A checkout run in place under
    # PYTHONDONTWRITEBYTECODE would compile its ~13,000 lines again in every command (~0.15 s);
    # the peers' libraries come from site-packages, compiled at install.
    compileall.compile_dir(str(ROOT / "datakit"), quiet=1)
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
