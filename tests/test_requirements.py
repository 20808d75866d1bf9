"""The light install (requirements-bots.txt) runs every stage, with the same pins as the full one."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

from helpers import REPO, stage_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def pinned(filename: str) -> list[str]:
    lines = (REPO / filename).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-"))]


def test_the_light_install_pins_what_the_full_one_pins():
    full = pinned("requirements.txt")
    assert pinned("requirements-bots.txt"), "requirements-bots.txt lists nothing"
    for requirement in pinned("requirements-bots.txt"):
        assert requirement in full, f"{requirement} differs from requirements.txt"


def installed_closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install: them, their extras and their dependencies."""
    found: set[str] = set()
    todo = [Requirement(line) for line in requirements]
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in found:
            continue
        found.add(key)
        found.add(name)
        for line in metadata.requires(requirement.name) or []:
            dependency = Requirement(line)
            wanted = dependency.marker is None or any(
                dependency.marker.evaluate({"extra": extra}) for extra in requirement.extras | {""})
            if wanted:
                todo.append(dependency)
    return {name for name in found if "[" not in name}


LIGHT_INTERPRETER = """
import importlib, importlib.abc, json, pkgutil, sys
from importlib import metadata

allowed = set(json.loads(sys.argv[1]))
owners = metadata.packages_distributions()


class NotInstalled(importlib.abc.MetaPathFinder):
    \"\"\"Modules of distributions the light install does not bring are missing, as they would be.\"\"\"

    def find_spec(self, name, path=None, target=None):
        dists = owners.get(name.split(".")[0])
        if dists and not any(d.lower().replace("_", "-") in allowed for d in dists):
            raise ModuleNotFoundError(f"No module named {name!r} (not in requirements-bots.txt)")
        return None


sys.meta_path.insert(0, NotInstalled())
import bots
for module in pkgutil.iter_modules(bots.__path__):
    if module.name.startswith("stage"):
        importlib.import_module("bots." + module.name)
from bots import stage3_sqlite_logger
sys.exit(stage3_sqlite_logger.run_stage(stage3_sqlite_logger.STAGE, ["--demo"]))
"""


def test_every_stage_runs_with_only_what_the_light_install_brings():
    """In a fresh interpreter where every other installed package is missing, every stage imports
    and stage 3's demo runs."""
    allowed = installed_closure(pinned("requirements-bots.txt")) | {"ptb-persistence-cookbook"}
    result = subprocess.run([sys.executable, "-c", LIGHT_INTERPRETER, json.dumps(sorted(allowed))],
                            capture_output=True, text=True, env=stage_environment(), cwd=REPO,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bot restarts" in result.stdout
