"""TensorFlow's account of a lost worker, kept out of a multi-worker run's stderr.

When a worker dies, TensorFlow logs a multi-line C++ ERROR record for every collective it
aborts (``E0000 ... base_collective_executor.cc:252] BaseCollectiveExecutor::StartAbort
UNAVAILABLE ...``, then ``ring_alg.cc``'s), just before the stage's own line names the
lost worker. The filter holds such records back and drops them once that line
(``error: multi-worker training stopped ...``) comes; every other line passes at once.
If the line never comes, the held records are written at the end: nothing else is hidden.

It runs as a child process reading this process's fd 2 through a pipe, because
TensorFlow can hold the GIL while it waits for the cluster (a thread could not drain the
pipe then), and because the watchdog's own line, written after this process is killed,
must pass through it too. Standard library only: the child runs this file as a script.
"""
from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import sys

# An ERROR record from TensorFlow's C++ logging about collectives or the coordination
# service giving up: a lost or silent peer (continuation lines carry no prefix).
PEER_LOSS = re.compile(
    r"^E\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] .*"
    r"(?:[Cc]ollective|[Cc]oordination|heartbeat|[Aa]bort|UNAVAILABLE|DEADLINE_EXCEEDED|CANCELLED)"
)
STOPPED = "error: multi-worker training stopped"


class PeerLossLines:
    """Line by line: what to write now, and what to write at the end."""

    def __init__(self) -> None:
        self._held: list[str] = []
        self._stopped = False

    def feed(self, line: str) -> list[str]:
        if line.startswith(STOPPED):
            self._held.clear()  # the one line says what these records said, naming the worker
            self._stopped = True
            return [line]
        if self._held or PEER_LOSS.match(line):
            self._held.append(line)  # a record and whatever follows it, until the line or the end
            return []
        return [line]

    def end(self) -> list[str]:
        held, self._held = self._held, []
        return [] if self._stopped else held


def _filter_stdin_to_stdout() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the stage; its exit (EOF) ends us
    lines, out = PeerLossLines(), sys.stdout.buffer
    for raw in sys.stdin.buffer:
        for line in lines.feed(raw.decode(errors="surrogateescape")):
            out.write(line.encode(errors="surrogateescape"))
            out.flush()
    for line in lines.end():
        out.write(line.encode(errors="surrogateescape"))
    out.flush()


_child: subprocess.Popen | None = None


def install() -> None:
    """From now until exit, this process's fd 2 (C++ and Python alike) goes through the filter.

    A child process started later (the watchdog) inherits the filtered fd 2; it must end
    before this process exits, or the final wait here gives up after a few seconds.
    """
    global _child
    if _child is not None:
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    _child = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=read_end, stdout=terminal)
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(terminal, 2)  # closes our end of the pipe: the filter writes what it holds and ends
        os.close(terminal)
        try:
            _child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    atexit.register(restore)


if __name__ == "__main__":
    _filter_stdin_to_stdout()
