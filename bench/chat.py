"""Conversations: datakit against transformers' assistant masks through datasets.map (peer_chat_hf.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import line, measure, write_recipe

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
    r = write_recipe(work, "dk_chat", {
        "tokenizer": str(tok), "chat_template": str(template),
        "sources": [{"path": str(data), "format": "messages"}],
        "transforms": [{"template": "chat"}, {"tokenize": {"cutoff_len": 1024}}],
        "split": {"val_set_size": 2000, "seed": 42}, "output": str(work / "dk_chat")})
    # taken in turn, the fastest of each: one run of each minutes apart measures the machine's
    # other work as much as the programs (single runs of either moved by 20-30% here)
    peer_cmd = [sys.executable, bench / "peer_chat_hf.py", data, p["tok"], work / "chat_hf", "--cutoff", "1024"]
    runs = {"peer": [], "dk": []}
    for _ in range(max(2, args.repeat)):
        runs["peer"].append(measure(peer_cmd, clean=[work / "chat_hf"]))
        runs["dk"].append(measure([*dk, "build", r, "--overwrite", "--silent"]))
    peer, d = (min(runs[k], key=lambda x: x["wall"]) for k in ("peer", "dk"))
    print(f"chat: {data} (20,000 conversations, {data.stat().st_size / 1e6:.0f} MB), ChatML, cutoff 1024, "
          f"Llama 2 tokenizer + <|im_start|>/<|im_end|>")
    for name, res, key in (("peer_chat_hf.py (num_proc 2)", peer, "peer"), ("datakit build", d, "dk")):
        walls = " ".join(format(x["wall"], ".2f") for x in runs[key])
        print(f"  {name:<30} wall {res['wall']:6.2f} s   peak RSS {res['rss_mb']:7.0f} MB   (runs in turn: {walls})")
    manifest = json.loads((work / "dk_chat" / "manifest.json").read_text())
    print(f"  datakit step thread-seconds: {manifest.get('timings')}")
    line("peer_chat_hf wall / datakit wall", f"{peer['wall'] / d['wall']:.2f}x", ">= 3.00x", peer["wall"] >= 3 * d["wall"])
    same, total = _compare_rows(work / "chat_hf", work / "dk_chat")
    line("rows identical to the peer (input_ids and labels)", f"{same}/{total}", "all", same == total)
