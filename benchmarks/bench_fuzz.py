"""The fuzzing suite's long mode as a count: every stage over the seeded fuzz corpus, what each mutated input ended as.

`python benchmarks/run.py fuzz [--seeds 0,1,2] [--scale 4]` writes `tests/fuzz_inputs.py`'s corpus for each seed
(`scale` multiplies the truncated and bit-flipped files), runs images, pseudo-video, videos, caption (tiny BLIP-2)
and segment (histogram embedder) through `vidrd-data` in a child process, twice (the second must resume to the same
rows), and prints one row per seed and stage: inputs seen, how many ended ok / failed / as a clip stage's mix,
how many inputs had no row or more than one (a violation for a one-row stage), failed rows without a reason,
tracebacks on stderr, the exit statuses, and whether the rerun gave the same rows. Then, per stage, what each kind
of mutated input ended as (summed over seeds). Nothing is asserted here: tests/test_fuzz.py asserts the property.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq  # noqa: E402

from tests.fuzz_inputs import run_stage_cli, stage_commands, write_fuzz_corpus  # noqa: E402
from vidrd_data import manifest as mf  # noqa: E402
from vidrd_demo.corpus import write_demo_corpus  # noqa: E402

STAGES = ["images", "pseudo-video", "videos", "caption", "segment"]


def _rows_by_input(out: Path) -> tuple[int, dict[int, list[dict]]]:
    inputs = pq.read_table(out / mf.INPUTS_FILE).num_rows
    by_input: dict[int, list[dict]] = defaultdict(list)
    for row in mf.Manifest.open(out).read().to_pylist():
        by_input[row["input_row"]].append(row)
    return inputs, by_input


def run_one(stage: str, corpus, out: Path) -> tuple[dict, Counter]:
    """Return the count row of one stage over one corpus, and what each kind of input ended as."""
    args, clip_stage = stage_commands(corpus)[stage]
    cases = corpus.image_cases if stage in ("images", "pseudo-video") else corpus.video_cases
    started = time.perf_counter()
    first = run_stage_cli(stage, args, out)
    seconds = time.perf_counter() - started
    row = {"stage": stage, "inputs": len(cases), "exit": first.returncode}
    if first.returncode != 0 or not (out / mf.INPUTS_FILE).is_file():
        return {**row, "ok": "-", "failed": "-", "ok+failed": "-", "no row": "-", "extra rows": "-",
                "no reason": "-", "tracebacks": first.stderr.count("Traceback"), "rerun": "-",
                "seconds": round(seconds, 1)}, Counter()
    inputs, by_input = _rows_by_input(out)
    ended = {i: "+".join(sorted({r["status"] for r in rows})) for i, rows in by_input.items()}
    again = run_stage_cli(stage, args, out)
    key = lambda r: (r["input_row"], r["sample_id"], r["status"], r["error"])  # noqa: E731
    same = again.returncode == 0 and sorted(map(key, mf.Manifest.open(out).read().to_pylist())) == sorted(
        key(r) for rows in by_input.values() for r in rows)
    counts = Counter(ended.values())
    row.update({
        "ok": counts["ok"], "failed": counts["failed"], "ok+failed": counts["failed+ok"],
        "no row": sum(1 for i in range(inputs) if i not in by_input),
        "extra rows": 0 if clip_stage else sum(1 for rows in by_input.values() if len(rows) > 1),
        "no reason": sum(1 for rows in by_input.values() for r in rows if r["status"] == "failed" and not r["error"]),
        "tracebacks": first.stderr.count("Traceback") + again.stderr.count("Traceback"),
        "rerun": "same rows" if same else f"DIFFERENT (exit {again.returncode})",
        "seconds": round(seconds, 1),
    })
    return row, Counter((cases[i], ended.get(i, "no row")) for i in range(len(cases)))


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated corpus seeds.")
    parser.add_argument("--scale", type=int, default=4, help="Truncated / bit-flipped files per source kind × 3.")
    parser.add_argument("--stages", default=",".join(STAGES))
    args = parser.parse_args(argv)
    rows, by_case = [], {stage: Counter() for stage in args.stages.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(tmp) / "demo"
        write_demo_corpus(demo, models=True)
        for seed in (int(s) for s in args.seeds.split(",")):
            corpus = write_fuzz_corpus(Path(tmp) / f"seed{seed}", seed=seed, scale=args.scale, demo=demo)
            for stage in by_case:
                row, cases = run_one(stage, corpus, Path(tmp) / f"seed{seed}" / f"out_{stage}")
                rows.append({"seed": seed, **row})
                by_case[stage].update(cases)
    _print_cases(by_case)
    return rows


def _print_cases(by_case: dict[str, Counter]) -> None:
    from rich.console import Console
    from rich.table import Table

    stages = list(by_case)
    kinds = sorted({case for counts in by_case.values() for case, _ in counts})
    table = Table(title="what each kind of input ended as (inputs, summed over seeds)")
    table.add_column("input")
    for stage in stages:
        table.add_column(stage)
    for kind in kinds:
        cells = []
        for stage in stages:
            ended = {end: n for (case, end), n in by_case[stage].items() if case == kind}
            cells.append(", ".join(f"{n} {end}" for end, n in sorted(ended.items())) or "-")
        table.add_row(kind, *cells)
    Console(width=200).print(table)


if __name__ == "__main__":
    from benchmarks.run import print_table

    print_table("fuzz", main(sys.argv[1:]))
