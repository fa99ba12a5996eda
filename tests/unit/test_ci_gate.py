"""CI runs the README's test command, and that command gates style and types first."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GATE = ("ruff check .", "ruff format --check .", "mypy")


def _commands(script: str) -> list[str]:
    """The script's lines that are commands (no comments, blanks, or block syntax)."""
    lines = [line.strip() for line in script.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "fi", "done"))]


def test_readme_leads_with_make_demo_and_make_test() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert first_block is not None
    leading = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert leading == ["make demo", "make test"]


def test_ci_calls_exactly_the_readme_test_command() -> None:
    commands = _commands((REPO / ".ci" / "run").read_text())
    assert commands[-1] == "make test"
    assert [c for c in commands if re.search(r"\bmake\b", c)] == ["make test"]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on PATH")
def test_make_test_runs_the_style_and_type_gate_before_any_test() -> None:
    done = subprocess.run(
        ["make", "-n", "-C", str(REPO), "test"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    first_test = next(i for i, line in enumerate(lines) if "pytest" in line)
    for command in GATE:
        at = [i for i, line in enumerate(lines) if line.endswith(f"/{command}")]
        assert at and at[0] < first_test, f"{command!r} does not run before the tests"
