"""The lifecycle the README's diagram shows is the one a recorded run really produces."""

from __future__ import annotations

import json
import re

from helpers import REPO

from bots.lifecycle import record_lifecycle
from persistence.recording import to_mermaid


def mermaid_blocks(markdown: str) -> list[str]:
    return [m.strip() for m in re.findall(r"```mermaid\n(.*?)```", markdown, flags=re.S)]


def sections(calls) -> dict[str, list[str]]:
    """The methods called after each label of the timeline."""
    result: dict[str, list[str]] = {}
    label = ""
    for call in calls:
        if call.is_mark:
            label = call.method[1:].strip()
            result[label] = []
        else:
            result[label].append(call.method)
    return result


async def test_recorded_run_matches_what_ptb_is_known_to_do(tmp_path):
    by_label = sections(await record_lifecycle(tmp_path / "x.pickle"))
    start, first_messages, save, empty_save, between, stop, shutdown = by_label.values()
    assert start == ["get_user_data", "get_chat_data", "get_bot_data"]
    assert first_messages == ["refresh_bot_data", "refresh_chat_data", "refresh_user_data"] * 2
    assert sorted(save) == sorted(["update_bot_data"] + ["update_chat_data", "update_user_data"] * 2)
    assert empty_save == ["update_bot_data"]
    assert between == ["refresh_bot_data", "refresh_chat_data", "refresh_user_data"]
    assert stop == []
    assert sorted(shutdown[:-1]) == ["update_bot_data", "update_chat_data", "update_user_data"]
    assert shutdown[-1] == "flush"


async def test_readme_diagram_is_the_recorded_one(tmp_path):
    diagram = to_mermaid(await record_lifecycle(tmp_path / "x.pickle"))
    readme = (REPO / "README.md").read_text()
    assert diagram in mermaid_blocks(readme)


def test_notebook_saved_diagram_is_the_readme_one():
    notebook = json.loads((REPO / "notebooks" / "00_how_persistence_is_called.ipynb").read_text())
    saved = [
        "".join(output["data"]["text/markdown"])
        for cell in notebook["cells"] if cell["cell_type"] == "code"
        for output in cell.get("outputs", []) if "text/markdown" in output.get("data", {})
    ]
    readme_blocks = mermaid_blocks((REPO / "README.md").read_text())
    assert any(block in readme_blocks for text in saved for block in mermaid_blocks(text))
