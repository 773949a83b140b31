"""One-line, user-facing errors for the stage scripts."""
from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from typing import Callable


class PipelineError(Exception):
    """A problem the user can fix: bad params, bad data, a missing file.

    The message is a single line naming the file, key or value at fault and what was
    expected. Stage scripts print it without a traceback.
    """


INTERRUPTED = "interrupted (Ctrl-C); outputs are only replaced by complete files, re-run the stage"
# Under `dvc repro` / `dvc exp run`, DVC deleted the stage's outputs before running it.
INTERRUPTED_UNDER_DVC = (
    "interrupted (Ctrl-C); DVC removed stage '{stage}''s outputs before running it: `dvc checkout` restores "
    "the cached ones and `git checkout -- metrics` the rest, or re-run `dvc repro`"
)


# SIGINTs this stage has received. Some library code swallows the KeyboardInterrupt that Ctrl-C
# raises (Keras converts each batch's logs inside a bare `except:`), so long loops also check this.
_interrupts: list[int] = []


def interrupt_requested() -> bool:
    """Whether Ctrl-C has reached this stage, even where the exception it raised was swallowed."""
    return bool(_interrupts)


def interrupted_message() -> str:
    """What is true after Ctrl-C: DVC sets DVC_STAGE for the commands it runs."""
    stage = os.environ.get("DVC_STAGE")
    return INTERRUPTED_UNDER_DVC.format(stage=stage) if stage else INTERRUPTED


def require_temporary_directory() -> None:
    """A stage needs a writable temporary directory: TensorFlow's AutoGraph writes the code it
    converts there (else it warns and runs the code unconverted) and saving a model writes a
    scratch copy there. Without one, stop with one line before any work."""
    import tempfile

    try:
        with tempfile.TemporaryFile():
            pass
    except (OSError, FileNotFoundError) as err:
        where = tempfile.tempdir or os.environ.get("TMPDIR") or "/tmp"
        raise PipelineError(
            f"no writable temporary directory ({where}: {getattr(err, 'strerror', None) or err}); TensorFlow and "
            "the model's save need one: set TMPDIR to a writable directory"
        ) from None


def stage_main(func: Callable[[], None]) -> Callable[[], None]:
    """Wrap a stage's ``main`` so a :class:`PipelineError` exits 1 with one line.

    Ctrl-C (SIGINT) likewise ends with one line and exit status 130, not a traceback;
    outputs are written atomically, so an interrupted stage leaves the previous ones.
    A Ctrl-C that lands inside TensorFlow's graph tracing surfaces as another exception
    (its context managers turn it into "Nesting violated"), so the signal itself is
    recorded and any error after it is reported as the interruption it is; a Ctrl-C that library
    code swallowed still ends the stage (training checks :func:`interrupt_requested` per batch).
    """

    @functools.wraps(func)
    def wrapper() -> None:
        _interrupts.clear()

        def on_sigint(signum, _frame):
            _interrupts.append(signum)
            raise KeyboardInterrupt

        if threading.current_thread() is threading.main_thread():  # where Python delivers signals
            signal.signal(signal.SIGINT, on_sigint)
        try:
            require_temporary_directory()
            func()
            if _interrupts:  # swallowed on the way; outputs are complete files, but the user asked to stop
                raise KeyboardInterrupt
        except SystemExit:
            raise
        except BaseException as err:  # every path below ends in one line or re-raises
            if _interrupts or isinstance(err, KeyboardInterrupt):
                print(f"error: {interrupted_message()}", file=sys.stderr)
                sys.exit(130)
            if isinstance(err, PipelineError):
                message = " ".join(str(err).split())  # always exactly one line
                print(f"error: {message}", file=sys.stderr)
                sys.exit(1)
            if isinstance(err, OSError):  # last resort for I/O the stage did not anticipate (a full disk)
                where = err.filename or "I/O"
                print(f"error: {where}: {err.strerror or err}; outputs are only replaced by complete files",
                      file=sys.stderr)
                sys.exit(1)
            raise

    return wrapper
