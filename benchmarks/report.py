"""Shared report helpers for the suites: the JSON + Markdown + PNG triple, Markdown tables, bar charts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def write_report(payload: dict, out_dir: Path, name: str, *, markdown: str,
                 plot: Callable[[Path], object] | None) -> list[Path]:
    """`<name>.json`, `<name>.md` and (when `plot` is given) `<name>.png` in `out_dir`; returns the three paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = (out_dir / f"{name}.{ext}" for ext in ("json", "md", "png"))
    json_path.write_text(json.dumps(payload, indent=2))
    md_path.write_text(markdown)
    if plot is not None:
        plot(png_path)
    return [json_path, md_path, png_path]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def bar_chart(records: list[dict], path: Path, *, metric: str) -> Path:
    """One panel per (dataset, protocol), one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["dataset"], record["protocol"]), []).append(record)
    if not groups:
        return path
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), squeeze=False)
    for axis, ((dataset, protocol), group) in zip(axes[0], groups.items()):
        names = [r["method"] for r in group]
        values = [r["metrics"][metric] for r in group]
        colors = ["#d62728" if n.startswith("fused") else "#1f77b4" if n.startswith("lm-") else "#7f7f7f" for n in names]
        axis.bar(range(len(names)), values, color=colors)
        axis.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        axis.set_title(f"{dataset} · {protocol}", fontsize=9)
        axis.set_ylabel(metric)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
