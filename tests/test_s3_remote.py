"""Data and models shared through object storage: DVC's S3 remote against a real S3 server.

moto's standalone server (tests/s3_server.py) runs on a free port of 127.0.0.1 and checks
request signatures against an IAM user, as AWS does. The pipeline's outputs go there with
`dvc push`, come back into a fresh clone with `dvc pull`, and the model is fetched by name
with `dvc artifacts get`. Bad set-ups (wrong endpoint, missing bucket, wrong credentials)
each stop with one `ERROR:` line and lose nothing; when the server goes down mid-push, the
files already stored stay stored and a re-run of `dvc push` sends the rest.
Credentials never enter a committed file: `--local` config here, environment variables
in the clones.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BIN_DIR, project_env, run, stages_run, update_params
from tests.s3_server import FlakyEndpoint, S3Remote, free_port, running_s3_remote

# One xdist worker runs the whole module, in order: its tests build on each other's state.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("s3_remote")]

PREFIX = "fashion-vae"  # the remote is s3://<bucket>/fashion-vae
CACHED_OUTPUTS = [
    "data/raw/train-images-idx3-ubyte.gz",
    "data/raw/train-labels-idx1-ubyte.gz",
    "data/raw/t10k-images-idx3-ubyte.gz",
    "data/raw/t10k-labels-idx1-ubyte.gz",
    "data/prepared/train.npz",
    "data/prepared/val.npz",
    "data/prepared/test.npz",
    "models/vae.keras",
    "data/latent/test_latent.csv",
    "plots/manifold.png",
    "plots/clusters.png",
    "plots/reconstructions.png",
    "plots/samples.png",
]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(project: Path) -> dict[str, str]:
    return {name: digest(project / name) for name in CACHED_OUTPUTS}


def dvc(s3: S3Remote, cwd: Path, *args: str, credentials: bool = False, check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """The real DVC CLI; AWS credentials in the environment only when asked for.

    On failure the server's log is quoted too, since the cause is often on its side.
    """
    env = s3.env(project_env(), credentials=credentials)
    result = run([str(BIN_DIR / "dvc"), *args], cwd, env=env, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"dvc {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
            f"--- {s3.server.log_path} ---\n{s3.server.log_tail()}"
        )
    return result


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    return [line for line in text.splitlines() if line.startswith("ERROR")]


def git_commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", message], project)


def pushed_count(result: subprocess.CompletedProcess) -> int:
    match = re.search(r"^(\d+) files? pushed$", result.stdout, re.MULTILINE)
    assert match, result.stdout + result.stderr
    return int(match.group(1))


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with running_s3_remote(tmp_path_factory.mktemp("s3")) as remote:
        yield remote


@pytest.fixture(scope="module")
def project(small_pipeline, s3, tmp_path_factory) -> Path:
    """The small pipeline's results, committed, with the S3 bucket as its default remote."""
    root = tmp_path_factory.mktemp("s3-project") / "project"
    shutil.copytree(
        small_pipeline, root, symlinks=True, ignore=lambda d, names: ["tmp"] if Path(d).name == ".dvc" else []
    )
    dvc(s3, root, "remote", "add", "-d", "storage", s3.url(PREFIX))
    dvc(s3, root, "remote", "modify", "storage", "endpointurl", s3.endpoint)
    # Secrets go to .dvc/config.local, which DVC keeps out of git.
    dvc(s3, root, "remote", "modify", "--local", "storage", "access_key_id", s3.access_key)
    dvc(s3, root, "remote", "modify", "--local", "storage", "secret_access_key", s3.secret_key)
    git_commit(root, "results, and the S3 remote")
    return root


def clone(source: Path | str, dest: Path) -> Path:
    run(["git", "clone", "-q", str(source), str(dest)], dest.parent)
    return dest


def test_credentials_stay_out_of_git(project, s3):
    tracked = run(["git", "ls-files"], project).stdout.split()
    assert ".dvc/config" in tracked and ".dvc/config.local" not in tracked
    committed = run(["git", "show", "HEAD:.dvc/config"], project).stdout
    assert s3.url(PREFIX) in committed and s3.endpoint in committed
    assert s3.access_key not in committed and s3.secret_key not in committed
    local = (project / ".dvc" / "config.local").read_text()
    assert s3.access_key in local and s3.secret_key in local
    assert run(["git", "status", "--porcelain"], project).stdout == ""


def test_push_then_pull_into_a_fresh_clone(project, s3, tmp_path):
    result = dvc(s3, project, "push")  # credentials from .dvc/config.local
    count = pushed_count(result)
    # Every output file, plus one manifest per directory output (data/raw, data/prepared).
    assert count == len(CACHED_OUTPUTS) + 2
    assert len(s3.objects(PREFIX + "/")) == count
    assert "in sync" in dvc(s3, project, "status", "--cloud").stdout
    assert dvc(s3, project, "push").stdout.strip() == "Everything is up to date."

    copy = clone(project, tmp_path / "clone")
    assert not (copy / "models" / "vae.keras").exists()
    pulled = dvc(s3, copy, "pull", credentials=True)  # credentials from the environment
    assert re.search(rf"^{count} files fetched", pulled.stdout, re.MULTILINE), pulled.stdout
    assert digests(copy) == digests(project)
    assert digest(copy / "models/vae.keras") == digest(project / "models/vae.keras")
    assert dvc(s3, copy, "status").stdout.strip() == "Data and pipelines are up to date."
    repro = dvc(s3, copy, "repro")
    assert stages_run(repro) == [] and "Data and pipelines are up to date." in repro.stdout


def test_artifacts_get_fetches_the_model_by_name(project, s3, tmp_path):
    """Another project gets `fashion-vae` from the git repository; the bytes come from S3."""
    assert "in sync" in dvc(s3, project, "status", "--cloud").stdout
    run([str(BIN_DIR / "gto"), "register", "fashion-vae", "--version", "v1.0.0"], project)
    registry = tmp_path / "registry.git"  # what a user would clone: git only, no DVC cache
    run(["git", "clone", "-q", "--bare", str(project), str(registry)], tmp_path)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    out = consumer / "vae.keras"

    without = dvc(s3, consumer, "artifacts", "get", str(registry), "fashion-vae", "-o", str(out), check=False)
    assert without.returncode != 0
    # DVC tries Studio first (not configured), then the DVC remote, which needs the key.
    assert error_lines(without) == [
        "ERROR: Failed to download artifact 'fashion-vae' via Studio - No studio config",
        f"ERROR: failed to get 'fashion-vae' from '{registry}' - "
        "Failed to download artifact 'fashion-vae' via DVC remote: Unable to locate credentials",
    ], without.stderr
    assert not out.exists()

    got = dvc(
        s3, consumer, "artifacts", "get", str(registry), "fashion-vae", "-o", str(out),
        "--remote-config", f"access_key_id={s3.access_key}", f"secret_access_key={s3.secret_key}",
    )
    assert "Downloaded 1 file(s)" in got.stdout, got.stdout
    assert digest(out) == digest(project / "models/vae.keras")


# -- bad set-ups: one clear line, nothing lost ----------------------------------------------


@pytest.fixture(scope="module")
def unpushed_change(project, s3) -> dict[str, str]:
    """A committed change (re-drawn plots) whose outputs are not on the remote yet."""
    update_params(project, {"plot": {"dpi": 50}})
    assert stages_run(dvc(s3, project, "repro")) == ["plot"]
    git_commit(project, "plots at 50 dpi")
    status = dvc(s3, project, "status", "--cloud").stdout
    assert "new:" in status and "plots/manifold.png" in status, status
    return digests(project)


# DVC's first request to the remote is a listing (ListObjectsV2) or, racing it, a HEAD of a
# directory manifest; a HEAD response has no body, so S3 reports only its status code.
FORBIDDEN_HEAD = ("ERROR: unexpected error - Forbidden: "
                  "An error occurred (403) when calling the HeadObject operation: Forbidden")
BAD_SIGNATURE = ("The request signature we calculated does not match the signature you provided. "
                 "Check your key and signing method.")
UNKNOWN_KEY = "The AWS Access Key Id you provided does not exist in our records."
BAD_SETUPS = {
    # id: (`dvc remote modify --local storage ...` arguments, the ERROR lines DVC may print)
    "missing-bucket": (
        ["url", f"s3://no-such-bucket/{PREFIX}"],
        {"ERROR: unexpected error - The specified bucket does not exist: An error occurred (NoSuchBucket) "
         "when calling the ListObjectsV2 operation: The specified bucket does not exist"},
    ),
    "wrong-secret-key": (
        ["secret_access_key", "not-the-secret"],
        {f"ERROR: unexpected error - {BAD_SIGNATURE}: An error occurred (SignatureDoesNotMatch) "
         f"when calling the ListObjectsV2 operation: {BAD_SIGNATURE}", FORBIDDEN_HEAD},
    ),
    "unknown-access-key": (
        ["access_key_id", "AKIAIOSFODNN7EXAMPLE"],
        {f"ERROR: unexpected error - {UNKNOWN_KEY}: An error occurred (InvalidAccessKeyId) "
         f"when calling the ListObjectsV2 operation: {UNKNOWN_KEY}", FORBIDDEN_HEAD},
    ),
}


@pytest.mark.parametrize("setup", ["wrong-endpoint", *BAD_SETUPS])
def test_a_bad_remote_setup_fails_with_one_line_and_loses_nothing(project, s3, unpushed_change, setup):
    port = free_port()  # nothing listens there
    if setup == "wrong-endpoint":
        change = ["endpointurl", f"http://127.0.0.1:{port}"]
    else:
        change, expected = BAD_SETUPS[setup]
    remote_before = s3.objects()
    local_config = project / ".dvc" / "config.local"
    good_config = local_config.read_text()
    dvc(s3, project, "remote", "modify", "--local", "storage", *change)
    try:
        result = dvc(s3, project, "push", check=False)
    finally:
        local_config.write_text(good_config)
    assert result.returncode != 0
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    if setup == "wrong-endpoint":  # the URL goes on with the first request DVC tried
        assert lines[0].startswith(
            f'ERROR: unexpected error - Could not connect to the endpoint URL: "http://127.0.0.1:{port}/{s3.bucket}'
        ), lines[0]
    else:
        assert lines[0] in expected
    assert digests(project) == unpushed_change  # the workspace is untouched
    assert dvc(s3, project, "status").stdout.strip() == "Data and pipelines are up to date."
    assert s3.objects() == remote_before  # and nothing half-written on the remote


def test_push_after_the_bad_setups_sends_the_change(project, s3, unpushed_change, tmp_path):
    before = s3.objects(PREFIX + "/")
    pushed = pushed_count(dvc(s3, project, "push"))
    assert pushed == 4  # the four re-drawn plots
    assert len(s3.objects(PREFIX + "/")) == len(before) + pushed
    copy = clone(project, tmp_path / "clone")
    dvc(s3, copy, "pull", credentials=True)
    assert digests(copy) == unpushed_change


def test_server_stopped_mid_push_then_push_completes(project, s3, tmp_path):
    """The endpoint goes down part-way through a push; once it is back, a re-run finishes.

    A throttled forwarder (2 MB/s) stands for the server, so the cut always lands with
    some files stored and others not yet sent.
    """
    flaky = FlakyEndpoint(s3.server.port, bytes_per_second=2e6).up()
    prefix = "outage-copy"
    try:
        dvc(s3, project, "remote", "add", "--local", "flaky", s3.url(prefix))
        dvc(s3, project, "remote", "modify", "--local", "flaky", "endpointurl", flaky.endpoint)
        before = digests(project)
        push = subprocess.Popen(
            [str(BIN_DIR / "dvc"), "push", "-r", "flaky"], cwd=project, env=s3.env(project_env()),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 120
        while not s3.objects(prefix + "/") and push.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert push.poll() is None, "the push ended before the cut: " + push.communicate()[1]
        flaky.down()
        stdout, stderr = push.communicate(timeout=600)
        stored = s3.objects(prefix + "/")

        assert push.returncode != 0
        lines = error_lines(subprocess.CompletedProcess([], push.returncode, stdout, stderr))
        # One line per file cut off, then DVC's summary; or, when the cut hits the upload of a
        # directory's manifest (which DVC sends after the directory's files), that failure instead.
        unreachable = f'Could not connect to the endpoint URL: "{flaky.endpoint}/{s3.bucket}/{prefix}/files/'
        *per_file, last = lines
        per_file_line = rf"ERROR: failed to transfer '[0-9a-f]{{32}}' - {re.escape(unreachable)}.*"
        assert all(re.fullmatch(per_file_line, line) for line in per_file), stderr
        assert last in (
            f"ERROR: failed to push data to the cloud - {len(per_file)} files failed to upload",
        ) or (last.startswith(f"ERROR: unexpected error - {unreachable}") and last.endswith('.dir"')), stderr
        assert 1 <= len(stored) < len(CACHED_OUTPUTS) + 2
        assert digests(project) == before

        flaky.bytes_per_second = None  # the server is back, at full speed
        flaky.up()
        again = dvc(s3, project, "push", "-r", "flaky", credentials=True)
        assert pushed_count(again) == len(CACHED_OUTPUTS) + 2 - len(stored)
        again = dvc(s3, project, "push", "-r", "flaky", credentials=True)
        assert again.stdout.strip() == "Everything is up to date."

        copy = clone(project, tmp_path / "clone")
        dvc(s3, copy, "remote", "add", "--local", "flaky", s3.url(prefix))
        dvc(s3, copy, "remote", "modify", "--local", "flaky", "endpointurl", flaky.endpoint)
        dvc(s3, copy, "pull", "-r", "flaky", credentials=True)
        assert digests(copy) == before
    finally:
        flaky.down()
