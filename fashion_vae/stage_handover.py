"""Hand a stage over to a stage server, when one is named: the test suite's way around start-up.

``python -m stages.NAME`` spends about 6 s importing TensorFlow before the stage starts.
The test suite runs hundreds of stages on tiny data, so it starts one server that has
imported every stage (tests/stage_server.py) and names its socket in
``FASHION_VAE_STAGE_SERVER``. A stage started with that variable set sends its command,
working directory, environment and standard streams to the server, which runs the stage's
``main()`` in a forked child; this process forwards Ctrl-C and SIGTERM to that child, ends
it if this process is killed (the server sees the connection close), and exits with the
child's status. Without the variable (every real run) nothing here runs.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys

ENV_VAR = "FASHION_VAE_STAGE_SERVER"


def hand_over_if_asked() -> None:
    """If a stage server is named and this is ``python -m stages.NAME``, run there and exit."""
    path = os.environ.get(ENV_VAR)
    argv = getattr(sys, "orig_argv", [])
    if not path or "-m" not in argv[:-1]:
        return
    module = argv[argv.index("-m") + 1]
    if not module.startswith("stages."):
        return
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}  # the stage's own children start normally
    hand_over(path, {"module": module, "cwd": os.getcwd(), "env": env})


def hand_over(path: str, request: dict) -> None:
    """Send ``request`` and this process's standard streams to the server at ``path``, wait for the
    run there to end, and exit as it did; Ctrl-C and SIGTERM are passed on. Never returns."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError as err:
        print(f"error: {ENV_VAR}={path}: no stage server there ({err.strerror or err}); unset it",
              file=sys.stderr)
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    socket.send_fds(connection, [json.dumps(request).encode() + b"\n"], [0, 1, 2])

    def forward(signum, _frame):
        connection.sendall(f"{signum}\n".encode())

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = connection.recv(4096)
        if not chunk:
            os._exit(1)  # the server went away
        reply += chunk
    status = json.loads(reply)["status"]
    if os.WIFSIGNALED(status):  # end as the child ended, killed by the same signal
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.waitstatus_to_exitcode(status))
