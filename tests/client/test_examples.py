"""Every program in examples/ runs against a real node process, as a user runs it; and the README's
Application SDK example too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

# What each example must print (it shows what it demonstrates).
EXPECTED = {
    "read_twin.py": ["node node-sdk", "room-example at version", "temp_1 = 20.5"],
    "write_values.py": ["conflict: the twin is at version", "refused: twins[0].ops[0].report", "(1.0,)"],
    "watch_resume.py": ["snapshot: temp_1 = 18.0", "local: temp_1 = 18.5", "resumed, local: temp_1 = 19.0"],
    "batch_writes.py": ["wrote 20 twins; the retry was a repeat: True", "wrote 1000 readings in columns"],
}


def test_every_example_is_checked() -> None:
    assert {p.name for p in EXAMPLES} == set(EXPECTED)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(example: Path, target: str) -> None:
    for _ in range(2):  # a second run finds what the first created, and must work as well
        result = subprocess.run(
            [sys.executable, str(example), target], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        for text in EXPECTED[example.name]:
            assert text in result.stdout, result.stdout


def test_the_readme_sdk_example_runs(target: str) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Application SDK") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the Application SDK section has a python example"
    result = subprocess.run(
        [sys.executable, "-c", code[1]],
        cwd=ROOT,
        env={**os.environ, "DRSDTP_API": target},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "heater desired" in result.stdout
