"""Run the benchmarks and print one table each: `python benchmarks/run.py [name ...] [--option value ...]`.

Options after the names go to every named benchmark (`python benchmarks/run.py caption --runs demo:5`).

Each `benchmarks/bench_NAME.py` has `main(argv) -> list[dict]` (rows with the same keys). Numbers are
measured in the same run as the ratios they are compared with; nothing here is asserted in tests.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def print_table(title: str, rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    Console(width=160).print(table)


def main(argv: list[str]) -> None:
    here = Path(__file__).parent
    first_option = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
    names, options = argv[:first_option], argv[first_option:]
    names = names or sorted(p.stem[len("bench_"):] for p in here.glob("bench_*.py"))
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print_table(name, module.main(options))


if __name__ == "__main__":
    main(sys.argv[1:])
