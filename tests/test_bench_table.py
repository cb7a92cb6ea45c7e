"""The README's Performance table is what ``python bench/report.py`` prints, for every benchmark it runs."""

from __future__ import annotations

import re
from pathlib import Path

from bench.report import SCRIPTS

REPO = Path(__file__).resolve().parent.parent


def _table() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- performance-table: .*? -->\n(.*?)<!-- /performance-table -->", text, re.S)
    assert match, "README.md has no performance-table block"
    return match.group(1)


def test_every_benchmark_of_the_report_has_its_rows_in_the_readme() -> None:
    table = _table()
    assert table.startswith("Measured ") and "by `python bench/report.py`" in table.splitlines()[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| what")]
    commands = {row.rstrip(" |").rsplit("| ", 1)[1] for row in rows}
    assert commands == {f"`python bench/{script}`" for script, _, _ in SCRIPTS}
    assert all(row.count(" | ") == 3 for row in rows), "each row: what | figure | target | command"


def test_each_script_prints_the_rows_the_report_collects() -> None:
    for script, _, _ in SCRIPTS:
        source = (REPO / "bench" / script).read_text(encoding="utf-8")
        assert "table_row(" in source and f'"python bench/{script}"' in source, script
