"""The comparison report as a reader gets it: report.html (outputs escaped, tables, embedded plots) and report.md."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tests.compare.factory import SCRIPT


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.images: list[str] = []
        self.cells: list[str] = []
        self.text: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        self._in_cell = tag == "td"

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_cell:
            self.cells.append(data)


def test_report_renders_with_escaped_outputs_tables_and_embedded_plots(compared: dict[str, Any]) -> None:
    output: Path = compared["output"]
    page = (output / "report.html").read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert "script" not in parser.tags  # no script element at all
    assert SCRIPT in parser.cells  # the model output is there, as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and SCRIPT not in page
    for name in ("source", "better/qa", "worse/qa", "few/qa", "slow/qa"):
        assert name in parser.cells
    assert "What is item s00?" in parser.cells  # the question, from the golden dataset
    assert len(parser.images) == 4
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert "Winner: better/qa" in "".join(parser.text)

    markdown = (output / "report.md").read_text(encoding="utf-8")
    assert "| better/qa | candidate | pass (winner) |" in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown and SCRIPT not in markdown
    for png in ("quality_cost.png", "latency.png", "difference_exact_match.png", "difference_token_f1.png"):
        assert f"]({png})" in markdown
        assert (output / png).read_bytes().startswith(b"\x89PNG")
