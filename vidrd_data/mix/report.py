"""The build report of a recipe: `report.json` (everything), `report.md` (tables) and `report.png` (figures)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vidrd_data import manifest as mf


def _histogram(values: np.ndarray, bins) -> dict:
    counts, edges = np.histogram(values, bins=bins)
    return {"edges": [round(float(e), 3) for e in edges], "counts": [int(c) for c in counts]}


def write_report(recipe, out: Path, mixed: mf.Manifest, per_source: dict) -> dict:
    """Summarise the mixed manifest and each source's build; write the three report files; return the JSON.

    The manifest is read part by part; what is kept across parts is counts, plus the positive clip
    durations (8 bytes a clip) for their histogram.
    """
    by_source_kind, splits, seconds, filtered = Counter(), Counter(), Counter(), Counter()
    word_counts = np.zeros(0, np.int64)
    positive, total_seconds, rows = [], 0.0, 0
    has_filter = "filter" in mixed.schema().names
    columns = ["source", "kind", "split", "caption", "start_time", "end_time", "status"] + (["filter"] if has_filter else [])
    for table in mixed.iter_parts(columns=columns):
        if has_filter:  # rows a filter left out (near duplicates) are counted, never mixed into the statistics
            left = table.filter(pc.equal(table["status"], "filtered"))
            for r in left.group_by(["source", "filter"]).aggregate([([], "count_all")]).to_pylist():
                filtered[f"{r['source']}/{r['filter']}"] += r["count_all"]
        table = table.filter(pc.equal(table["status"], "ok"))
        rows += table.num_rows
        durations = pc.subtract(table["end_time"], table["start_time"]).to_numpy(zero_copy_only=False).astype(float)
        durations = np.where(np.isnan(durations), 0.0, durations)
        total_seconds += float(durations.sum())
        positive.append(durations[durations > 0])
        words = pc.list_value_length(pc.ascii_split_whitespace(pc.fill_null(table["caption"], ""))).to_numpy()
        counts = np.bincount(words, minlength=len(word_counts))
        counts[: len(word_counts)] += word_counts
        word_counts = counts
        summed = table.select(["source", "kind", "split"]).append_column("seconds", pa.array(durations))
        for r in summed.group_by(["source", "kind"]).aggregate([([], "count_all")]).to_pylist():
            by_source_kind[(r["source"], r["kind"])] += r["count_all"]
        for r in summed.group_by("source").aggregate([("seconds", "sum")]).to_pylist():
            seconds[r["source"]] += r["seconds_sum"]
        for r in summed.group_by("split").aggregate([([], "count_all")]).to_pylist():
            splits[r["split"]] += r["count_all"]
    positive = np.concatenate(positive) if positive else np.zeros(0)
    scores = _score_values(mixed)
    # bins 0..max+1 words (at least 3), as np.histogram over the words themselves: the last bin holds the max
    edges = np.arange(0, max(len(word_counts) + 1, 4))
    word_hist = np.zeros(len(edges) - 1, np.int64)
    word_hist[: len(word_counts)] = word_counts
    report = {
        "recipe": str(recipe.path),
        "mixed_manifest": str(mixed.path),
        "rows": rows,
        "splits": dict(splits),
        "filtered": dict(sorted(filtered.items())),
        "rows_by_source_and_kind": {f"{s}/{k}": n for (s, k), n in sorted(by_source_kind.items())},
        "hours_by_source": {s: round(seconds[s] / 3600, 4) for s in sorted(seconds)},
        "hours_total": round(total_seconds / 3600, 4),
        "sources": per_source,
        "caption_words_histogram": {"edges": [round(float(e), 3) for e in edges], "counts": [int(c) for c in word_hist]},
        "clip_seconds_histogram": _histogram(positive, bins=10) if positive.size else None,
        "scores": {name: {**_describe(v), "histogram": _histogram(v, bins=20)} for name, v in scores.items() if v.size},
        "score_sheets": {},
    }
    out = Path(out)
    for name, values in scores.items():
        if values.size:
            report["score_sheets"][name] = _score_sheet(mixed, name, out / f"report_{name}.png")
    if report["scores"]:
        _score_figure(scores, out / "report_scores.png")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(_markdown(report), encoding="utf-8")
    _figure(report, edges, word_hist, positive, out / "report.png")
    return report


def _score_values(mixed: mf.Manifest) -> dict[str, np.ndarray]:
    """Return each numeric score column's finite values over the ok rows (8 bytes a row per score)."""
    from vidrd_data.scores import score_columns

    schema = mixed.schema()
    names = [f.name for f in score_columns()
             if f.name in schema.names and pa.types.is_floating(schema.field(f.name).type)]
    values = {n: [] for n in names}
    for table in (mixed.iter_parts(columns=names, status="ok") if names else []):
        for n in names:
            v = table[n].to_numpy(zero_copy_only=False).astype(float)
            values[n].append(v[np.isfinite(v)])
    return {n: np.concatenate(v) if v else np.zeros(0) for n, v in values.items()}


def _describe(v: np.ndarray) -> dict:
    q = np.quantile(v, [0.0, 0.05, 0.5, 0.95, 1.0])
    return {"rows": int(v.size), **{k: round(float(x), 4) for k, x in zip(("min", "p5", "median", "p95", "max"), q)}}


def _score_sheet(mixed: mf.Manifest, column: str, path: Path) -> str | None:
    """Write the contact sheet of the lowest and highest scored clips; return its file name (None if none drawn)."""
    from vidrd_data.inspection.sheet import contact_sheet, score_extremes

    rows = score_extremes(mixed, column, k=4)
    return path.name if rows and contact_sheet(mixed, str(path), rows=rows) else None


def _score_figure(scores: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = {n: v for n, v in scores.items() if v.size}
    fig, axes = plt.subplots(1, len(shown), figsize=(3.5 * len(shown), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], shown.items()):
        ax.hist(values, bins=20, color="#4c72b0")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _markdown(r: dict) -> str:
    lines = [
        f"# Build report: {r['recipe']}",
        "",
        f"Mixed manifest: `{r['mixed_manifest']}` — **{r['rows']} rows** "
        f"({', '.join(f'{k} {v}' for k, v in sorted(r['splits'].items()))}), {r['hours_total'] * 3600:.1f} s of video.",
        "",
        "| source | stage rows | failed | capped | unreadable | duplicates | near-duplicates | in mix | hours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    in_mix = Counter()
    for key, n in r["rows_by_source_and_kind"].items():
        in_mix[key.split("/")[0]] += n
    for name, s in r["sources"].items():
        lines.append(
            f"| {name} | {s['rows']} | {s['failed']} | {s['capped']} | {s.get('unreadable', 0)} | {s['duplicates']} "
            f"| {s.get('near_duplicates', 0)} "
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
    if r["filtered"] or any(s.get("filtered_by") for s in r["sources"].values()):
        lines += ["", "## Filters (rows left out as `filtered`)", "", "| source | filter | rows | where |",
                  "|---|---|---:|---|"]
        for name, s in r["sources"].items():
            lines += [f"| {name} | {f} | {n} | its stage |" for f, n in s.get("filtered_by", {}).items()]
        lines += [f"| {key.split('/')[0]} | {key.split('/')[1]} | {n} | the mix |" for key, n in r["filtered"].items()]
    if r["scores"]:
        lines += ["", "## Scores (ok rows of the mix)", "", "| score | rows | min | p5 | median | p95 | max | sheet |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for name, d in r["scores"].items():
            sheet = r["score_sheets"].get(name)
            lines.append(f"| {name} | {d['rows']} | {d['min']:.4g} | {d['p5']:.4g} | {d['median']:.4g} | {d['p95']:.4g} "
                         f"| {d['max']:.4g} | {f'[lowest/highest]({sheet})' if sheet else ''} |")
        lines += ["", "![scores](report_scores.png)"]
    lines += ["", "![report](report.png)", ""]
    return "\n".join(lines)


def _figure(r: dict, word_edges: np.ndarray, word_hist: np.ndarray, positive: np.ndarray, path: Path) -> None:
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
    axes[1, 0].hist(word_edges[:-1], bins=word_edges, weights=word_hist, color="#c44e52")
    axes[1, 0].set_title("caption length (words)")
    if positive.size:
        axes[1, 1].hist(positive, bins=10, color="#8172b2")
    axes[1, 1].set_title("clip duration (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
