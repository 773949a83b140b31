"""TensorFlow's account of a lost worker, kept out of a multi-worker run's stderr.

When a worker dies, TensorFlow logs a multi-line C++ ERROR record for every collective it
aborts (``E0000 ... base_collective_executor.cc:252] BaseCollectiveExecutor::StartAbort
UNAVAILABLE: Error reported from /job:worker/task:1 ...``, then ``ring_alg.cc``'s), just
before the stage's own line names the lost worker. The filter holds such records (a
header line and its continuation lines) back and drops them once that line
(``error: multi-worker training stopped ...``) comes. Every other line passes at once,
and a line that cannot continue a record (another log header, a traceback, a warning)
releases what is held first: only those records are ever hidden.

It runs as a child process reading this process's fd 2 through a pipe, because
TensorFlow can hold the GIL while it waits for the cluster (a thread could not drain the
pipe then), and so that the watchdog's line, written as it kills this process, passes
through it too. Standard library only: the child runs this file as a script.
"""
from __future__ import annotations

import atexit
import os
import re
import select
import subprocess
import sys

# An ERROR record from the collectives or the coordination service (by source file, or by
# what it says): how TensorFlow reports a peer that is gone.
PEER_LOSS = re.compile(
    r"^E\d{4} [\d:.]+\s+\d+ (?:(?:ring_alg|base_collective_executor|collective_\w+|coordination_\w+)\.cc:\d+\] "
    r"|[\w.]+:\d+\] .*(?:/job:worker/|[Cc]ollective|[Cc]oordination|heartbeat))"
)
# Lines that start something new: they end a held record.
NEW_LINE = re.compile(r"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] |Traceback |Exception |error: |warning: |\S+\.py:\d+: \w+)")
STOPPED = "error: multi-worker training stopped"
# The watchdog's line for a run that made no progress names no worker: TensorFlow's
# records, if any, are then the only diagnosis, so they are kept.
STALLED = "no training step finished"
# Written by this process at exit; the filter answers on its second pipe once all before it is out.
DRAIN = "\x00peer_loss_filter: drain\n"


class PeerLossLines:
    """Line by line: what to write now, and what to write at the end."""

    def __init__(self) -> None:
        self._held: list[str] = []
        self._stopped = False

    def feed(self, line: str) -> list[str]:
        if line.startswith(STOPPED):
            released = self._held if STALLED in line else []
            self._held = []
            self._stopped = True
            return [*released, line]  # the one line says what the records said, naming the worker
        if PEER_LOSS.match(line) or (self._held and not NEW_LINE.match(line)):
            self._held.append(line)  # a record, or a continuation of the held ones
            return []
        released, self._held = self._held, []
        return [*released, line]

    def end(self) -> list[str]:
        held, self._held = self._held, []
        return [] if self._stopped else held


def _filter_stdin_to_stdout(ack_fd: int) -> None:
    lines, out = PeerLossLines(), sys.stdout.buffer
    for raw in sys.stdin.buffer:
        text = raw.decode(errors="surrogateescape")
        if text.endswith(DRAIN):  # after a partial line too, if C++ left one unfinished
            for line in lines.feed(text[: -len(DRAIN)]) if text != DRAIN else []:
                out.write(line.encode(errors="surrogateescape"))
            out.flush()
            os.write(ack_fd, b".")
            continue
        for line in lines.feed(text):
            out.write(line.encode(errors="surrogateescape"))
            out.flush()
    for line in lines.end():
        out.write(line.encode(errors="surrogateescape"))
    out.flush()


_child: subprocess.Popen | None = None


def install() -> None:
    """From now until exit, this process's fd 2 (C++ and Python alike) goes through the filter.

    The filter ends when every holder of the pipe has ended (this process, and children
    that inherited fd 2, such as the watchdog); at exit, this process waits until the
    filter has written everything before it, so the last lines keep their order.
    """
    global _child
    if _child is not None:
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    ack_read, ack_write = os.pipe()
    _child = subprocess.Popen(
        # -I: the script's directory (fashion_vae/) must not shadow the standard library.
        [sys.executable, "-I", os.path.abspath(__file__), str(ack_write)],
        stdin=read_end, stdout=2, pass_fds=(ack_write,),
        start_new_session=True,  # Ctrl-C in a terminal is for the stage; the filter ends on EOF
    )
    for fd in (read_end, ack_write):
        os.close(fd)
    os.dup2(write_end, 2)
    os.close(write_end)

    def drain() -> None:
        try:
            sys.stderr.flush()
            os.write(2, DRAIN.encode())
            select.select([ack_read], [], [], 5.0)
        except (OSError, ValueError, AttributeError):
            pass  # the filter is gone: nothing left to wait for

    atexit.register(drain)


if __name__ == "__main__":
    _filter_stdin_to_stdout(int(sys.argv[1]))
