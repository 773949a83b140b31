"""One-line, user-facing errors for the stage scripts."""
from __future__ import annotations

import functools
import sys
from typing import Callable


class PipelineError(Exception):
    """A problem the user can fix: bad params, bad data, a missing file.

    The message is a single line naming the file, key or value at fault and what was
    expected. Stage scripts print it without a traceback.
    """


INTERRUPTED = "interrupted (Ctrl-C); outputs are only replaced by complete files, re-run the stage"


def stage_main(func: Callable[[], None]) -> Callable[[], None]:
    """Wrap a stage's ``main`` so a :class:`PipelineError` exits 1 with one line.

    Ctrl-C (SIGINT) likewise ends with one line and exit status 130, not a traceback;
    outputs are written atomically, so an interrupted stage leaves the previous ones.
    """

    @functools.wraps(func)
    def wrapper() -> None:
        try:
            func()
        except PipelineError as err:
            message = " ".join(str(err).split())  # always exactly one line
            print(f"error: {message}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print(f"error: {INTERRUPTED}", file=sys.stderr)
            sys.exit(130)

    return wrapper
