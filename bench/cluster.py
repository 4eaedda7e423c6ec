"""The Ray engine against the local engine, on a Ray cluster started for the run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import line, measure, pretrain_recipe, sft_recipe


def _same_rows(a: Path, b: Path) -> bool:
    """The two builds hold the same rows in the same order (whatever their files' sharding)."""
    from datasets import load_from_disk

    da, db = load_from_disk(str(a)), load_from_disk(str(b))
    return list(da) == list(db) and all(
        da[s].data.table.select(da[s].column_names).equals(db[s].data.table.select(db[s].column_names))
        for s in da)


def _stop(temp: Path) -> None:
    """End the processes of the cluster whose Ray folder is ``temp`` (their command lines name it)."""
    import signal
    import time

    mine = subprocess.run(["pgrep", "-f", str(temp)], capture_output=True, text=True).stdout.split()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(int(pid), sig)
            except ProcessLookupError:
                pass
        time.sleep(2)
    shutil.rmtree(temp, ignore_errors=True)


def bench_ray(args, p, dk, d1=None):
    """The pretraining build on the Ray engine against the local engine, on a running Ray cluster
    (started here with `ray start --head`, as users run it), with each Ray stage's throughput."""
    work = args.work
    corpus = p["c1"] / "corpus.jsonl"
    local_cmd = [*dk, "build", pretrain_recipe(work, corpus, p["tok"], work / "dk1"), "--overwrite", "--silent"]
    ray_bin = Path(sys.executable).with_name("ray")
    port = "6390"
    # a throwaway cluster on loopback: Ray's token authentication (on by default since 2.5x) is off
    os.environ["RAY_AUTH_MODE"] = "disabled"
    # a Ray folder of its own, so that stopping this cluster leaves any other on the machine running
    # (`ray stop` stops every Ray of the machine)
    temp = Path(tempfile.mkdtemp(prefix="dk-ray-"))
    subprocess.run([ray_bin, "start", "--head", "--port", port, "--num-cpus", str(os.cpu_count()),
                    "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(temp)],
                   check=True, capture_output=True)
    try:
        r = pretrain_recipe(work, corpus, p["tok"], work / "dk_ray")
        cmd = [*dk, "build", r, "--overwrite", "--silent", "--engine", "ray", "--address", f"127.0.0.1:{port}"]
        cold = measure(cmd)
        # local and Ray builds in turn (at least two of each), the fastest of each kept: on a shared
        # machine the load moves within a minute, and builds minutes apart compare the load, not the engines
        local_runs, ray_runs = [d1] if d1 is not None else [], []
        for _ in range(max(2, args.repeat)):
            local_runs.append(measure(local_cmd))
            ray_runs.append(measure(cmd))
        d1, warm = (min(runs, key=lambda r: r["wall"]) for runs in (local_runs, ray_runs))
        data = p["c1"] / "alpaca.json"  # and the SFT corpus with near dedup, for identity only
        sft = {}
        for engine, out in (("local", work / "dk_sft_dedup"), ("ray", work / "dk_sft_ray")):
            extra = ["--engine", "ray", "--address", f"127.0.0.1:{port}"] if engine == "ray" else []
            sft[engine] = measure([*dk, "build", sft_recipe(work, data, p["tok"], out, dedup=True), "-o", out,
                                   "--overwrite", "--silent", *extra])
    finally:
        _stop(temp)
    local_m = json.loads((work / "dk1" / "manifest.json").read_text())
    ray_m = json.loads((work / "dk_ray" / "manifest.json").read_text())
    # the two recipes differ only in `output`, which the inputs fingerprint covers
    same = all(local_m[k] == ray_m[k] for k in ("counts", "splits", "sources", "inputs", "lengths"))
    same = same and _same_rows(work / "dk1", work / "dk_ray")
    mb = corpus.stat().st_size / 1e6
    workers = ray_m["engine"]["workers"]
    print(f"ray: {corpus} ({mb:.1f} MB), the pretraining recipe above, a local Ray cluster of {workers} workers "
          f"(`ray start --head`)")
    # both runs include the driver's start (importing Ray), its connection, and the build's own
    # worker processes (Ray starts them per job); the cluster's start-up is not included
    walls = {name: " ".join(f"{r['wall']:.2f}" for r in runs) for name, runs in (("local", local_runs),
                                                                                  ("ray", ray_runs))}
    print(f"  local engine {d1['wall']:6.2f} s; ray engine {warm['wall']:6.2f} s (later builds on the running "
          f"cluster; the fastest of builds taken in turn: local {walls['local']}, ray {walls['ray']}), "
          f"{cold['wall']:6.2f} s (first build on the cluster)")
    for st in ray_m["engine"]["stages"]:
        busy, cpu = st["task_seconds"], st.get("cpu_seconds")
        rate = f"{mb / busy:6.2f} MB/s per worker" if busy and st["stage"] == "read + steps" else ""
        timing = (f"task time {busy:6.2f} s  cpu {cpu:6.2f} s" if busy is not None
                  else f"{'(on the driver)':<30}")
        print(f"  stage {st['stage']:<44} {st['tasks']:>4} tasks  wall {st['wall_seconds']:6.2f} s  {timing}  {rate}")
    line("ray engine wall / local engine wall (later builds)", f"{warm['wall'] / d1['wall']:.2f}x", "<= 1.30x",
         warm["wall"] <= 1.3 * d1["wall"])
    line("same rows, order, counts and splits as the local build", "yes" if same else "no", "yes", same)
    sft_local = json.loads((work / "dk_sft_dedup" / "manifest.json").read_text())
    sft_ray = json.loads((work / "dk_sft_ray" / "manifest.json").read_text())
    same_sft = all(sft_local[k] == sft_ray[k] for k in ("counts", "splits", "sources", "inputs", "lengths"))
    same_sft = same_sft and _same_rows(work / "dk_sft_dedup", work / "dk_sft_ray")
    print(f"  sft with near dedup (20,000 alpaca rows): local {sft['local']['wall']:.2f} s, "
          f"ray {sft['ray']['wall']:.2f} s")
    line("sft + near dedup: same rows, order, counts as local", "yes" if same_sft else "no", "yes", same_sft)
