"""One short summary of a finished build, with a sanity figure (mean row length)."""
from __future__ import annotations


def _n(x) -> str:
    return f"{x:,}"


def build_summary(result) -> str:
    m = result.manifest
    c = m["counts"]
    unit = "rows" if m["kind"] == "sft" else "blocks"
    splits = ", ".join(f"{name} {_n(s['rows'])} {unit}" if "packing" not in s else
                       f"{name} {_n(s['rows'])} packs of {_n(s['packing']['rows_packed'])} rows "
                       f"({100 * s['packing']['efficiency']:.1f}% filled)" for name, s in m["splits"].items())
    lines = [f"wrote {result.path} in {result.seconds:.1f}s: {splits}"]
    what = "documents" if m["kind"] == "pretrain" else "rows"
    lines.append(f"  read {_n(c.get('rows_read', 0))} {what}, {_n(c.get('tokens_read', 0))} tokens; "
                 f"wrote {_n(c.get('tokens_written', 0))} tokens; mean length {m['lengths']['mean']}")
    dropped = {k: v for k, v in c.get("tokens_dropped", {}).items() if v}
    if dropped:
        lines.append("  tokens dropped: " + ", ".join(f"{k} {_n(v)}" for k, v in dropped.items()))
    rows_dropped = {k: v for k, v in c.get("rows_dropped", {}).items() if v}
    if rows_dropped:
        lines.append("  rows dropped: " + ", ".join(f"{k} {_n(v)}" for k, v in rows_dropped.items()))
    if m["kind"] == "sft":
        sup = c.get("supervised_tokens", 0)
        total = c.get("tokens_written", 0) or 1
        lines.append(f"  supervised tokens {_n(sup)} ({100 * sup / total:.1f}%), "
                     f"rows truncated {_n(c.get('rows_truncated', 0))}")
        if c.get("rows_truncated") or c.get("rows_dropped", {}).get("overlong"):
            lines.append("  (a row longer than cutoff_len counts as cutoff_len tokens read)")
    return "\n".join(lines)
