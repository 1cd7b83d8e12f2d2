"""bench/common.py's records: the current figures keep one section per benchmark, the history every run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import common


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch):
    monkeypatch.setattr(common, "machine_info", lambda: "test machine")


def test_a_rerun_replaces_its_current_section_and_is_appended_to_the_history(tmp_path):
    doc, history = tmp_path / "benchmarks.md", tmp_path / "history" / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nintro\n\n## Current figures\n\n### other\n\nkept\n", encoding="utf-8")
    common.append_section("speed (bench/x.py)", "first run: 1.0 s", doc=doc, history=history)
    common.append_section("speed (bench/x.py)", "second run: 0.5 s", doc=doc, history=history)
    current = doc.read_text(encoding="utf-8")
    assert current.count("### speed (bench/x.py)") == 1 and "second run: 0.5 s" in current
    assert "first run" not in current and "### other\n\nkept" in current and current.startswith("# Benchmarks\n\nintro")
    past = history.read_text(encoding="utf-8")
    assert past.count("### speed (bench/x.py)") == 2 and past.index("first run") < past.index("second run")


def test_a_document_without_its_heading_is_refused(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text("# something else\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="Current figures"):
        common.append_section("t", "b", doc=doc, history=tmp_path / "h.md")
    assert doc.read_text(encoding="utf-8") == "# something else\n"
