"""Every notebook keeps the house skeleton and reads well on GitHub (the tests execute them; this
checks what they look like): a title, Overview, Prerequisites, sections numbered in order, Summary,
What next; no section heading hidden in a code cell; no absolute path of the machine that ran it
in the saved outputs; a time estimate that says whether it is reading or running time."""

from __future__ import annotations

import json
import re

import pytest
from helpers import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))

SKELETON = ["## Overview", "## Prerequisites", "## Summary", "## What next"]

ABSOLUTE_PATH = re.compile(
    r"(?<![\w.~/:-])/(?:tmp|home|root|Users|work|usr|opt|var|private|srv|mnt)/[^\s'\"\\]*")
"""A path on the machine that ran the notebook (/home/..., /tmp/..., a virtual environment's)."""

COLOURS = re.compile(r"\x1b\[[0-9;]*m")
"""The terminal colour codes of a traceback, which would hide a path from the pattern."""

KNOWN = {
}
"""Failures in notebooks this check's author may not edit, each reported to their owner."""


def known(path, check: str) -> None:
    if (path.stem, check) in KNOWN:
        pytest.xfail(KNOWN[path.stem, check])


def texts(value) -> list[str]:
    """Every string inside an output (its text, its data by MIME type, a traceback's lines)."""
    if isinstance(value, str):
        return [COLOURS.sub("", value)]
    if isinstance(value, dict):
        return [text for item in value.values() for text in texts(item)]
    if isinstance(value, list):
        return [text for item in value for text in texts(item)]
    return []


def cells(path):
    return json.loads(path.read_text())["cells"]


def headings(path) -> list[str]:
    found = []
    for cell in cells(path):
        if cell["cell_type"] == "markdown":
            found += [line.strip() for line in "".join(cell["source"]).splitlines() if line.startswith("#")]
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_skeleton_is_there_in_order(path):
    first = cells(path)[0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# "), \
        "the first cell is the title: '# Stage N: ...'"
    found = headings(path)
    missing = [heading for heading in SKELETON if heading not in found]
    assert not missing, f"missing {missing}"
    positions = [found.index(heading) for heading in SKELETON]
    assert positions == sorted(positions), f"expected in this order: {SKELETON}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_numbered_sections_are_in_order(path):
    numbers = [int(m.group(1)) for h in headings(path) if (m := re.match(r"## (\d+)\. ", h))]
    assert numbers == list(range(1, len(numbers) + 1)), f"sections numbered {numbers}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_heading_hides_in_a_code_cell(path):
    for cell in cells(path):
        if cell["cell_type"] == "code":
            for line in "".join(cell["source"]).splitlines():
                assert not re.match(r"#\s*#+\s", line), f"a heading in a code cell: {line!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_absolute_paths_in_the_outputs(path):
    for number, cell in enumerate(cells(path)):
        for output in cell.get("outputs", []):
            found = [path for text in texts(output) for path in ABSOLUTE_PATH.findall(text)]
            assert not found, f"cell {number} shows {found[:3]}: print paths relative to a work directory"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_time_estimate_says_what_it_measures(path):
    known(path, "time")
    for cell in cells(path):
        if cell["cell_type"] == "markdown":
            for sentence in re.split(r"(?<=[.;])\s", "".join(cell["source"])):
                if re.search(r"\b\d+ minutes?\b", sentence) and not re.search(r"\bread|\brun", sentence):
                    raise AssertionError(f"say whether this is reading or running time: {sentence!r}")


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each check fails on the kind of mistake it exists for."""
    bad = tmp_path / "bad.ipynb"
    bad.write_text(json.dumps({"cells": [
        {"cell_type": "code", "source": ["# ## 3. A restart\n"],
         "outputs": [{"output_type": "stream", "text": "File /home/me/project/bots/x.py, line 3"}]},
        {"cell_type": "markdown", "source": ["## 1. One\n", "## 3. Three\n", "About 10 minutes.\n"]},
    ]}))
    for check in (test_the_skeleton_is_there_in_order, test_numbered_sections_are_in_order,
                  test_no_heading_hides_in_a_code_cell, test_no_absolute_paths_in_the_outputs,
                  test_a_time_estimate_says_what_it_measures):
        with pytest.raises(AssertionError):
            check(bad)
