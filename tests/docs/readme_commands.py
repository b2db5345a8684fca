"""The README's runnable commands: every line of a fenced ```` ```sh ```` block (other fences are prose,
config or output). A line is one shell command; what follows ``#`` is its comment, which the shell ignores.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

FENCE = re.compile(r"^```(\S*)\s*$")


@dataclasses.dataclass(frozen=True)
class Command:
    line: int  # 1-based line in the README
    text: str  # the line as written, comment included

    @property
    def command(self) -> str:
        """The line without its trailing comment (a ``#`` after whitespace, outside quotes)."""
        quote = ""
        for i, ch in enumerate(self.text):
            if quote:
                quote = "" if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch == "#" and (i == 0 or self.text[i - 1].isspace()):
                return self.text[:i].rstrip()
        return self.text.rstrip()

    @property
    def id(self) -> str:
        return f"L{self.line}: {self.command}"


def sh_commands(readme: Path) -> list[Command]:
    commands: list[Command] = []
    fence: str | None = None
    for number, raw in enumerate(readme.read_text().splitlines(), start=1):
        match = FENCE.match(raw.strip())
        if match:
            fence = match[1] if fence is None else None
            continue
        if fence == "sh" and raw.strip():
            commands.append(Command(number, raw.strip()))
    if fence is not None:
        raise ValueError(f"{readme}: a ``` fence is not closed")
    return commands


def bench_scripts(command: Command) -> list[str]:
    """The ``benches/*.py`` a line names, in its command or its comment; ``bench_x_{a,b}.py`` names two."""
    names: list[str] = []
    for match in re.finditer(r"(?:benches/)?(bench\w*|validate\w*)(\{[\w,]+\})?(\w*)\.py", command.text):
        head, braces, tail = match[1], match[2], match[3]
        for part in braces.strip("{}").split(",") if braces else [""]:
            name = f"{head}{part}{tail}.py"
            if name not in names:
                names.append(name)
    return names
