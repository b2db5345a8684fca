"""The real firmware in simavr: builds firmware/ once, runs fwsim (the .elf with its UART on a pty), and
talks to the board from the node's side of the line."""

from __future__ import annotations

import os
import subprocess
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Any

from drsdtp.adapters.payloads import DEFAULT_LIMITS, PayloadError
from drsdtp.adapters.serial_line import Frame, command_line, parse_line

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
ELF = FIRMWARE / "build" / "drsdtp-fw.elf"
FWSIM = FIRMWARE / "build" / "fwsim"

_built = threading.Lock()


def build_firmware() -> None:
    """``make -C firmware`` (the .elf within its budgets and the harness); an error shows make's output."""
    with _built:
        done = subprocess.run(["make", "-C", str(FIRMWARE), "-s", "all"], capture_output=True, text=True)
        assert done.returncode == 0, f"the firmware did not build:\n{done.stdout}\n{done.stderr}"


class SimBoard:
    """fwsim running the firmware. ``events`` collects its stdout ("pin B0 1 T_US", "led ...", "adc T_US",
    "reset T_US", ...); ``send`` types a harness command ("adc 0 2500", "din 0", "reset", "corrupt")."""

    def __init__(
        self,
        tmp: Path,
        *,
        speed: float = 1.0,
        scenario: str = "",
        eeprom: Path | None = None,
        trace: bool = False,
    ) -> None:
        self.link = tmp / "ttyFW"
        args = [str(FWSIM), str(ELF), "--link", str(self.link), "--speed", str(speed)]
        if scenario:
            path = tmp / "scenario.txt"
            path.write_text(scenario)
            args += ["--scenario", str(path)]
        args += ["--eeprom", str(eeprom or tmp / "eeprom.bin")]
        if trace:
            args.append("--trace")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.events: list[str] = []
        self.stamps: list[float] = []  # time.monotonic() when each event was read
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_event("ready", 20)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            with self._cond:
                self.stamps.append(time.monotonic())
                self.events.append(text.strip())
                self._cond.notify_all()

    def wait_event(self, prefix: str, limit_s: float = 20, after: int = 0) -> str:
        """The first event from index ``after`` on that starts with ``prefix``."""
        deadline = time.monotonic() + limit_s
        with self._cond:
            while True:
                for event in self.events[after:]:
                    if event.startswith(prefix):
                        return event
                assert self.proc.poll() is None or self.events, "fwsim exited"
                left = deadline - time.monotonic()
                assert left > 0, f"no {prefix!r} event from fwsim; saw {self.events[-10:]}"
                self._cond.wait(min(left, 0.2))

    def sync(self) -> None:
        """Returns once every event fwsim reported so far is in ``events`` (it answers "time" in order)."""
        mark = len(self.events)
        self.send("time")
        self.wait_event("time", after=mark)

    def new_events(self, after: int, wait_s: float) -> list[str]:
        """The events from index ``after`` on, waiting up to ``wait_s`` for one if there are none."""
        with self._cond:
            if len(self.events) <= after:
                self._cond.wait(wait_s)
            return self.events[after:]

    def times(self, prefix: str) -> list[int]:
        """The simulated microseconds of every event so named so far."""
        with self._cond:
            return [int(e.split()[-1]) for e in self.events if e.startswith(prefix + " ")]

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> str:
        """Stops fwsim (it saves the EEPROM); its stderr."""
        if self.proc.poll() is None:
            self.send("quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        err = self.proc.stderr.read()
        # fwsim has exited: its stdout ends, and the reader must have read the last lines before the pipe is
        # closed under it (else it raises "I/O operation on closed file" in its thread).
        self._reader.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return err


class Line:
    """The node's end of the pty, spoken to directly: command lines out, board frames in."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd, termios.TCSANOW)  # not TCSAFLUSH: what the board sent before is kept
        self._buf = b""
        self.corrupt = 0

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def command(self, command_id: str, op: str, value: Any = None) -> None:
        self.write(command_line(command_id, op, value))

    def frame(self, limit_s: float = 20) -> Frame:
        """The next board line, decoded with the node's parser (checksum required)."""
        import select

        deadline = time.monotonic() + limit_s
        while True:
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                assert left > 0, "no line from the board"
                ready, _, _ = select.select([self.fd], [], [], left)
                if ready:
                    self._buf += os.read(self.fd, 4096)
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():  # the empty line before a boot line is skipped, as the node does
                return parse_line(line, DEFAULT_LIMITS, checksum_required=True)

    def until(self, kind: str, limit_s: float = 20, **info: Any) -> tuple[Frame, list[Frame]]:
        """Frames up to the first of ``kind`` whose readings or info hold ``info``; (it, those before it)."""
        seen: list[Frame] = []
        deadline = time.monotonic() + limit_s
        while True:
            try:
                frame = self.frame(max(0.1, deadline - time.monotonic()))
            except PayloadError:  # a line a reset cut short: the node drops it too (counted as corrupt)
                self.corrupt += 1
                continue
            fields = {**frame.readings, **frame.info}
            if frame.kind == kind and all(k in fields and fields[k] == v for k, v in info.items()):
                return frame, seen
            seen.append(frame)

    def close(self) -> None:
        os.close(self.fd)
