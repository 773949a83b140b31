"""stage_main: every way a stage can end prints at most one line, Ctrl-C included."""
import subprocess
import sys
import textwrap

import pytest

from fashion_vae.errors import INTERRUPTED

# A stage whose Ctrl-C lands inside a context manager that turns it into another exception,
# as TensorFlow's graph tracing does ("Nesting violated for default stack").
SCRIPT = textwrap.dedent("""
    import contextlib, os, signal, sys
    from fashion_vae.errors import PipelineError, stage_main

    @contextlib.contextmanager
    def tracing():
        try:
            yield
        except KeyboardInterrupt:
            raise AssertionError("Nesting violated for default stack")

    @stage_main
    def main():
        case = sys.argv[1]
        if case == "interrupt-in-tracing":
            with tracing():
                os.kill(os.getpid(), signal.SIGINT)
                signal.pause()
        elif case == "interrupt":
            os.kill(os.getpid(), signal.SIGINT)
            signal.pause()
        elif case == "interrupt-swallowed":  # as Keras's per-batch log conversion does, in a bare `except:`
            try:
                os.kill(os.getpid(), signal.SIGINT)
                signal.pause()
            except:  # noqa: E722
                pass
            print("went on after Ctrl-C")
        elif case == "pipeline-error":
            raise PipelineError("params.yaml: train.epochs is 'x'\\nexpected an integer")
        elif case == "bug":
            raise AssertionError("a real bug")

    main()
""")


def run(case):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    return subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, timeout=60, env=env,
                          check=False)


@pytest.mark.parametrize("case", ["interrupt", "interrupt-in-tracing", "interrupt-swallowed"])
def test_ctrl_c_ends_with_one_line_and_status_130_even_inside_tracing(case):
    done = run(case)
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [f"error: {INTERRUPTED}"]


def test_pipeline_error_is_one_line_and_status_1():
    done = run("pipeline-error")
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["error: params.yaml: train.epochs is 'x' expected an integer"]


def test_a_bug_without_ctrl_c_keeps_its_traceback():
    done = run("bug")
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "AssertionError: a real bug" in done.stderr
    assert "interrupted" not in done.stderr
