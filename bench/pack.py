"""Packing instruction rows: best-fit decreasing's efficiency and speed, and TRL's packer on the same rows."""
from __future__ import annotations

import json
import time

from common import best, line, write_recipe


def pack_recipe(work, data, tok, out, pack=None):
    steps = [{"template": "alpaca"}, {"tokenize": {"cutoff_len": 2048}}] + ([{"pack": pack}] if pack else [])
    return write_recipe(work, out.name, {
        "tokenizer": str(tok), "sources": [{"path": str(data), "format": "alpaca"}],
        "transforms": steps, "split": {"val_set_size": 0, "seed": 42}, "output": str(out)})


def bench_pack(args, p, dk, block=2048):

    import numpy as np
    from datasets import load_from_disk

    from datakit.transforms.binpack import best_fit_decreasing

    work = args.work
    data = p["c1"] / "alpaca.json"
    # TRL's packer maps the unpacked rows with datasets, which leaves its cache files in the build's
    # folder: datakit then refuses to replace it (files it did not write), so each run starts clean
    rows = best([*dk, "build", pack_recipe(work, data, p["tok"], work / "dk_rows"), "--overwrite", "--silent"],
                args.repeat, clean=[work / "dk_rows"])
    packed = best([*dk, "build", pack_recipe(work, data, p["tok"], work / "dk_packed",
                                             {"block_size": block, "strategy": "bfd"}),
                   "--overwrite", "--silent"], args.repeat, clean=[work / "dk_packed"])
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
