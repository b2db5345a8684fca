"""`drsdtp check-config` validates [[rules]] and [[notify]] as the node does: a clear error naming the key,
or the rules listed."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from drsdtp.cli import main
from drsdtp.console import Console

BASE = 'node_id = "n1"\ndata_dir = "data"\n'
RULE = '[[rules]]\nname = "hot"\ntwins = "room-*"\nwhen = "{when}"\n'


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


def check(tmp_path: Path, text: str) -> Done:
    """The CLI's own entry point, in process (its parser, checks and console)."""
    path = tmp_path / "node.toml"
    path.write_text(BASE + text)
    out, err = io.StringIO(), io.StringIO()
    code = main(["check-config", "--no-env", str(path)], console=Console(out, err))
    return Done(code, out.getvalue(), err.getvalue())


def test_a_bad_rule_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    done = check(tmp_path, RULE.format(when="temperature >> 30"))
    assert done.returncode == 2
    assert "rules[0].when" in done.stderr and "expected a value, found '>' at position 14" in done.stderr
    done = check(
        tmp_path, RULE.format(when="t > 30") + '[[rules.actions]]\ntype = "notify"\ntarget = "ops"\n'
    )
    assert done.returncode == 2 and "no [[notify]] target named 'ops'" in done.stderr


def test_valid_rules_are_listed(tmp_path: Path) -> None:
    done = check(
        tmp_path,
        '[[notify]]\nname = "ops"\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\n'
        + RULE.format(when="time_to_threshold(t) < 10 min")
        + 'for = "30s"\n[[rules.actions]]\ntype = "notify"\ntarget = "ops"\n',
    )
    assert done.returncode == 0, done.stderr
    assert "Rules" in done.stdout and "time_to_threshold(t) < 10 min" in done.stdout and "30s" in done.stdout
