"""The build report of a recipe: `report.json` (everything), `report.md` (tables) and `report.png` (figures)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from vidrd_data import manifest as mf


def _histogram(values: np.ndarray, bins) -> dict:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts]}


def write_report(recipe, out: Path, mixed: mf.Manifest, per_source: dict) -> dict:
    """Summarise the mixed manifest and each source's build; write the three report files; return the JSON."""
    table = mixed.read(columns=["source", "kind", "split", "caption", "start_time", "end_time"])
    sources = table["source"].to_pylist()
    kinds = table["kind"].to_pylist()
    splits = table["split"].to_pylist()
    durations = pc.subtract(table["end_time"], table["start_time"]).to_numpy(zero_copy_only=False)
    durations = np.where(np.isnan(durations.astype(float)), 0.0, durations.astype(float))
    words = pc.list_value_length(pc.ascii_split_whitespace(pc.fill_null(table["caption"], ""))).to_numpy()
    by_source_kind = Counter(zip(sources, kinds))
    seconds = Counter()
    for s, d in zip(sources, durations):
        seconds[s] += d
    report = {
        "recipe": str(recipe.path),
        "mixed_manifest": str(mixed.path),
        "rows": table.num_rows,
        "splits": dict(Counter(splits)),
        "rows_by_source_and_kind": {f"{s}/{k}": n for (s, k), n in sorted(by_source_kind.items())},
        "hours_by_source": {s: round(seconds[s] / 3600, 4) for s in sorted(seconds)},
        "hours_total": round(float(durations.sum()) / 3600, 4),
        "sources": per_source,
        "caption_words_histogram": _histogram(words, bins=np.arange(0, max(int(words.max(initial=0)) + 2, 4))),
        "clip_seconds_histogram": _histogram(durations[durations > 0], bins=10) if (durations > 0).any() else None,
    }
    out = Path(out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    _figure(report, words, durations, out / "report.png")
    return report


def _markdown(r: dict) -> str:
    lines = [
        f"# Build report: {r['recipe']}",
        "",
        f"Mixed manifest: `{r['mixed_manifest']}` — **{r['rows']} rows** "
        f"({', '.join(f'{k} {v}' for k, v in sorted(r['splits'].items()))}), {r['hours_total'] * 3600:.1f} s of video.",
        "",
        "| source | stage rows | failed | capped | duplicates | near-duplicates | in mix | hours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    in_mix = Counter()
    for key, n in r["rows_by_source_and_kind"].items():
        in_mix[key.split("/")[0]] += n
    for name, s in r["sources"].items():
        lines.append(
            f"| {name} | {s['rows']} | {s['failed']} | {s['capped']} | {s['duplicates']} | {s.get('near_duplicates', 0)} "
            f"| {in_mix[name]} | {r['hours_by_source'].get(name, 0):.4g} |"
        )
    lines += ["", "| source / kind | rows |", "|---|---:|"]
    lines += [f"| {k} | {n} |" for k, n in r["rows_by_source_and_kind"].items()]
    lines += ["", "## Failure reasons", ""]
    for name, s in r["sources"].items():
        for reason, n in list(s["failure_reasons"].items())[:5]:
            lines.append(f"- {name}: {n} × `{reason}`")
    if not any(s["failure_reasons"] for s in r["sources"].values()):
        lines.append("- none")
    lines += ["", "![report](report.png)", ""]
    return "\n".join(lines)


def _figure(r: dict, words: np.ndarray, durations: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    labels = list(r["rows_by_source_and_kind"])
    axes[0, 0].barh(labels, [r["rows_by_source_and_kind"][k] for k in labels], color="#4c72b0")
    axes[0, 0].set_title("rows per source / kind")
    hours = r["hours_by_source"]
    axes[0, 1].bar(list(hours), [h * 3600 for h in hours.values()], color="#55a868")
    axes[0, 1].set_title("seconds of video per source")
    axes[1, 0].hist(words, bins=np.arange(0, max(int(words.max(initial=0)) + 2, 4)), color="#c44e52")
    axes[1, 0].set_title("caption length (words)")
    positive = durations[durations > 0]
    if positive.size:
        axes[1, 1].hist(positive, bins=10, color="#8172b2")
    axes[1, 1].set_title("clip duration (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
