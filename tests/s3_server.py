"""A real S3-compatible HTTP server on 127.0.0.1 for DVC's S3 remote: moto's standalone server.

``MotoS3Server`` runs ``python -m moto.server`` in its own process on a free port, logs to a
file (quoted in failure messages), waits until it answers, and kills it on ``stop()``.
It can require signed requests from a real IAM user, so wrong credentials are refused as
on AWS. ``FlakyEndpoint`` sits in front of it as a TCP forwarder that can be cut (listener closed,
every open connection reset) and brought back on the same port: what a client sees when an
S3 service goes down mid-transfer while its storage keeps what it already received.

Used by tests/test_s3_remote.py, tests/test_sweep_across_machines.py and
benchmarks/remote_io.py.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import boto3
from botocore.config import Config

HOST = "127.0.0.1"
REGION = "us-east-1"
# Grants the test user everything on S3 and nothing else.
S3_ONLY_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def aws_env(base: dict[str, str], access_key: str | None = None, secret_key: str | None = None,
            home: Path | None = None) -> dict[str, str]:
    """``base`` cleared of the caller's AWS settings, optionally with credentials.

    A developer's ~/.aws or AWS_PROFILE must not leak into a test, so the shared config
    files point to ``home`` (files that do not exist) and every AWS_* variable is dropped.
    """
    env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
    if home is not None:
        env["AWS_CONFIG_FILE"] = str(home / "aws-config")
        env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "aws-credentials")
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no 1-second probe of an instance metadata service
    if access_key is not None:
        env["AWS_ACCESS_KEY_ID"] = access_key
        env["AWS_SECRET_ACCESS_KEY"] = secret_key or ""
    return env


class MotoS3Server:
    """moto's standalone server in a child process, on a free port of 127.0.0.1."""

    def __init__(self, log_path: Path, port: int | None = None):
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 60) -> "MotoS3Server":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = aws_env(dict(os.environ))
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)  # requests are free until require_auth()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        log.close()  # the child holds its own descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2):
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"moto server did not answer on {self.endpoint} in {timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> "MotoS3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    # -- administration, done before require_auth() turns signature checks on ---------------

    def client(self, service: str, access_key: str = "admin", secret_key: str = "admin"):
        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=Config(retries={"max_attempts": 2}),
        )

    def create_bucket(self, name: str) -> None:
        self.client("s3").create_bucket(Bucket=name)

    def create_user(self, name: str = "dvc-user") -> tuple[str, str]:
        """An IAM user allowed everything on S3; returns its (access key id, secret key)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="s3-only", PolicyDocument=json.dumps(S3_ONLY_POLICY))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def require_auth(self) -> None:
        """From now on every request must be signed by a known user's key (moto's IAM mode)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200, response.read()

    def objects(self, bucket: str, access_key: str, secret_key: str) -> dict[str, int]:
        """{key: size} of every object in ``bucket``."""
        s3 = self.client("s3", access_key, secret_key)
        found = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
        return found


@dataclass
class S3Remote:
    """A running server with one bucket and one user whose key signs every request."""

    server: MotoS3Server
    bucket: str
    access_key: str
    secret_key: str
    home: Path  # where the (absent) AWS config files are looked for

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def env(self, base: dict[str, str], credentials: bool = True) -> dict[str, str]:
        """``base`` with this user's key in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or none)."""
        if credentials:
            return aws_env(base, self.access_key, self.secret_key, home=self.home)
        return aws_env(base, home=self.home)

    def objects(self, prefix: str = "") -> dict[str, int]:
        """{key: size} of the objects under ``prefix``."""
        found = self.server.objects(self.bucket, self.access_key, self.secret_key)
        return {key: size for key, size in found.items() if key.startswith(prefix)}


@contextmanager
def running_s3_remote(root: Path, bucket: str = "dvc-store") -> Iterator[S3Remote]:
    """A moto S3 server logging to ``root``/moto.log, with ``bucket`` and a signing user."""
    root.mkdir(parents=True, exist_ok=True)
    server = MotoS3Server(root / "moto.log").start()
    try:
        server.create_bucket(bucket)
        access_key, secret_key = server.create_user()
        server.require_auth()
        yield S3Remote(server, bucket, access_key, secret_key, root)
    finally:
        server.stop()


class FlakyEndpoint:
    """A TCP forwarder to ``target_port`` that can go down and come back on the same port.

    ``down()`` closes the listening socket and resets every open connection, so a client
    mid-upload gets a connection error and new connections are refused; ``up()``
    listens again. ``bytes_per_second`` throttles the client-to-server direction (all
    connections together) so that an upload lasts long enough to be cut part-way.
    """

    def __init__(self, target_port: int, bytes_per_second: float | None = None):
        self.target_port = target_port
        self.port = free_port()
        self.bytes_per_second = bytes_per_second
        self._lock = threading.Lock()
        self._next_send = 0.0
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def up(self) -> "FlakyEndpoint":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for sock in connections:
            try:  # linger 0: close with a reset, as a crashed server's kernel would
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed by down()
                return
            try:
                server = socket.create_connection((HOST, self.target_port), timeout=10)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # down() ran meanwhile
                    client.close()
                    server.close()
                    return
                self._connections.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, dest: socket.socket, throttled: bool) -> None:
        try:
            while True:
                chunk = source.recv(16384)
                if not chunk:
                    break
                if throttled and self.bytes_per_second:
                    time.sleep(self._delay(len(chunk)))
                dest.sendall(chunk)
        except OSError:
            pass
        finally:  # one side hung up or was cut: end the pair
            with self._lock:
                self._connections.difference_update((source, dest))
            for sock in (source, dest):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _delay(self, size: int) -> float:
        """Seconds to wait before sending ``size`` bytes at the shared rate."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_send)
            self._next_send = start + size / self.bytes_per_second
            return start - now
