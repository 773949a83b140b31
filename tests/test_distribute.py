"""tf.distribute: MirroredStrategy on two logical CPUs; multi_worker's TF_CONFIG checks,
chief detection, the local cluster helper and the split of every global batch.

The multi-worker training stage itself, end to end, is in tests/test_multi_worker.py.
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from fashion_vae import cluster as local_cluster
from fashion_vae import distributed
from fashion_vae.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    # Two logical CPUs stand in for two GPUs; must be set before TensorFlow starts.
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from fashion_vae import dataset, prepared, training
    raw_dir, out = sys.argv[1], sys.argv[2]
    x = prepared.normalise(dataset.load_raw(raw_dir, "train_images")[:640])
    model_params = {"latent_dim": 2, "conv_filters": [8, 16], "kernel_size": 3, "dense_units": 16, "decoder_dense_units": 0, "beta": 1.0}
    train_params = {"seed": 1, "epochs": 3, "batch_size": 64, "learning_rate": 0.003, "lr_schedule": "constant",
                    "warmup_epochs": 0, "steps_per_execution": 1, "threads": 2, "distribute": "mirrored"}
    losses = []
    cb = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: losses.append(float(logs["loss"])))
    model, summary = training.train(model_params, train_params, x[:512], x[512:], callbacks=[cb], verbose=0)
    strategy = model.distribute_strategy
    training.save_model(model, out + "/vae.keras")
    loaded = training.load_model(out + "/vae.keras", model_params)
    same = bool(np.array_equal(loaded.encoder.heads(x[:8])[0], model.encoder.heads(x[:8])[0]))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "strategy": type(strategy).__name__,
                      "losses": losses, "reload_identical": same}))
    """
)


def test_mirrored_strategy_on_two_logical_cpus(raw_dir, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(raw_dir), str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["strategy"] == "MirroredStrategy" and report["replicas"] == 2
    losses = report["losses"]
    assert len(losses) == 3 and losses[-1] < losses[0] - 20
    assert report["reload_identical"]
    assert (tmp_path / "vae.keras").stat().st_size > 0


TWO = ["127.0.0.1:2222", "127.0.0.1:2223"]


def tf_config(workers=TWO, index=0, task_type="worker", **extra) -> str:
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": task_type, "index": index}, **extra})


def test_valid_tf_config_names_this_worker():
    cluster = distributed.parse_tf_config(tf_config(index=1))
    assert cluster.workers == tuple(TWO) and cluster.index == 1 and cluster.size == 2
    assert not cluster.is_chief and cluster.describe() == "worker 1 of 2 (127.0.0.1:2223)"
    assert distributed.parse_tf_config(tf_config(["[::1]:80", "host-b.example:65535"])).is_chief


BAD_TF_CONFIGS = [
    ("{not json", r"^TF_CONFIG: not valid JSON \("),
    ("[1, 2]", r"^TF_CONFIG: expected a JSON object with 'cluster' and 'task', got list$"),
    (json.dumps({"task": {"type": "worker", "index": 0}}), r"^TF_CONFIG: no 'cluster' \(expected"),
    (json.dumps({"cluster": {}, "task": {"type": "worker", "index": 0}}), r"^TF_CONFIG: no 'cluster'"),
    (json.dumps({"cluster": {"worker": TWO}}), r"^TF_CONFIG: no 'task' \(expected"),
    (tf_config(index=2), r"^TF_CONFIG: task\.index 2 is out of range; cluster\.worker has 2 workers \(0 to 1\)$"),
    (tf_config(index=-1), r"^TF_CONFIG: task\.index -1 is out of range"),
    (tf_config(index="0"), r"^TF_CONFIG: task\.index is '0'; expected an integer$"),
    (tf_config(index=True), r"^TF_CONFIG: task\.index is True; expected an integer$"),
    (tf_config(task_type="chief"), r"^TF_CONFIG: task\.type is 'chief'; expected 'worker'$"),
    (tf_config(task_type="evaluator"), r"^TF_CONFIG: task\.type is 'evaluator'; expected 'worker'$"),
    (tf_config(task_type="x" * 5000), r"^TF_CONFIG: task\.type is 'x{56}\.\.\.; expected 'worker'$"),  # cut short
    (json.dumps({"cluster": {"worker": TWO, "ps": ["h:1"]}, "task": {"type": "worker", "index": 0}}),
     r"^TF_CONFIG: cluster has a 'ps' job; only 'worker' is supported \(worker 0 is the chief\)$"),
    (json.dumps({"cluster": {"chief": ["h:1"], "worker": TWO}, "task": {"type": "worker", "index": 0}}),
     r"^TF_CONFIG: cluster has a 'chief' job; only 'worker' is supported"),
    (tf_config([]), r"^TF_CONFIG: cluster\.worker must be a non-empty list"),
    (tf_config("127.0.0.1:2222"), r"^TF_CONFIG: cluster\.worker must be a non-empty list"),
    (tf_config(["127.0.0.1"]), r"^TF_CONFIG: cluster\.worker has '127\.0\.0\.1'; expected \"host:port\""),
    (tf_config(["127.0.0.1:0"]), r"^TF_CONFIG: cluster\.worker has '127\.0\.0\.1:0'; expected \"host:port\""),
    (tf_config(["h:70000"]), r"^TF_CONFIG: cluster\.worker has 'h:70000'"),
    (tf_config(["h:1", 5]), r"^TF_CONFIG: cluster\.worker has 5; expected"),
    (tf_config(["h:1", "h:1"]), r"^TF_CONFIG: cluster\.worker lists 'h:1' more than once$"),
    (tf_config(tasks=1), r"^TF_CONFIG: unknown key 'tasks'; expected 'cluster' and 'task'$"),
]


@pytest.mark.parametrize("text, message", BAD_TF_CONFIGS)
def test_bad_tf_config_is_one_line_naming_the_fault(text, message):
    with pytest.raises(PipelineError, match=message) as err:
        distributed.parse_tf_config(text)
    assert "\n" not in str(err.value)


def test_environment_must_match_train_distribute():
    with_cluster = {"TF_CONFIG": tf_config(index=1)}
    assert distributed.check_environment("multi_worker", with_cluster).index == 1
    assert distributed.check_environment("none", {}) is None
    assert distributed.check_environment("mirrored", {"TF_CONFIG": "  "}) is None  # empty = unset
    with pytest.raises(PipelineError, match=r"^train\.distribute is multi_worker but TF_CONFIG is not set"):
        distributed.check_environment("multi_worker", {})
    # Each worker would silently train alone, and every one would write the outputs.
    for name in ("none", "mirrored"):
        with pytest.raises(PipelineError, match=(
            rf"^TF_CONFIG is set \(worker 1 of 2 \(127\.0\.0\.1:2223\)\) but params\.yaml has "
            rf"train\.distribute = {name}; set train\.distribute: multi_worker, or unset TF_CONFIG"
        )):
            distributed.check_environment(name, with_cluster)


def test_only_worker_zero_or_a_single_machine_is_chief():
    assert distributed.is_chief(environ={})
    assert distributed.is_chief(environ={"TF_CONFIG": tf_config(index=0)})
    assert not distributed.is_chief(environ={"TF_CONFIG": tf_config(index=1)})
    assert not distributed.is_chief("multi_worker", {"TF_CONFIG": tf_config(index=1)})
    with pytest.raises(PipelineError, match="task.index 5 is out of range"):
        distributed.is_chief(environ={"TF_CONFIG": tf_config(index=5)})
    with pytest.raises(PipelineError, match="train.distribute = none"):
        distributed.is_chief("none", {"TF_CONFIG": tf_config(index=0)})


def test_workers_inputs_are_compared_key_by_key():
    import numpy as np

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    mine = distributed.describe_inputs({"train": {"seed": 1, "epochs": 2}, "x_train": x})
    assert mine["x_train"].startswith("float32[3, 4] sha256:")
    assert distributed.first_difference(mine, distributed.describe_inputs(
        {"train": {"seed": 1, "epochs": 2}, "x_train": x.copy()})) is None
    assert distributed.first_difference(mine, {**mine, "train": {"seed": 7, "epochs": 2}}) == (
        "train.seed is 1 here but 7"
    )
    changed = distributed.describe_inputs({"train": {"seed": 1, "epochs": 2}, "x_train": x + 1})
    assert distributed.first_difference(mine, changed).startswith("x_train is 'float32[3, 4] sha256:")


def test_cluster_helper_gives_each_worker_its_own_tf_config():
    ports = local_cluster.free_ports(3)
    assert len(set(ports)) == 3 and all(1024 <= p < 65536 for p in ports)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    for index in range(3):
        parsed = distributed.parse_tf_config(local_cluster.tf_config(addresses, index))
        assert parsed.workers == tuple(addresses) and parsed.index == index


def test_cluster_helper_returns_the_chief_status_and_stops_the_others(tmp_path):
    # Worker 0 fails at once; worker 1 would sleep for a minute: it is stopped, not waited for.
    script = (
        "import json, os, sys, time; i = json.loads(os.environ['TF_CONFIG'])['task']['index']; "
        "print('worker', i, 'up', flush=True); time.sleep(60) if i else sys.exit(3)"
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "fashion_vae.cluster", "--workers", "2", "--", sys.executable, "-c", script],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 40
    assert "cluster: the chief has exited; stopping worker 1" in result.stderr
    assert "[worker 1] worker 1 up" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "cluster: chief (worker 0) exited with status 3"


def test_cluster_helper_usage_errors():
    for args, message in [([], "give the stage command after --"), (["--", "x"], "required: --workers")]:
        result = subprocess.run(
            [sys.executable, "-m", "fashion_vae.cluster", *(["--workers", "2"] if not args else []), *args],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 2 and message in result.stderr


SHARDING_SCRIPT = textwrap.dedent(
    """
    import json, os
    import numpy as np
    from fashion_vae import distributed, training
    training.configure_runtime(seed=3, threads=1)
    train_params = {"distribute": "multi_worker", "worker_timeout_s": 60, "batch_size": 8}
    strategy = distributed.strategy_for(train_params)
    x = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1) * np.ones((1, 28, 28, 1), np.float32)
    ids = lambda batch: sorted(int(v) for v in np.asarray(batch)[:, 0, 0, 0])
    two_epochs = lambda dataset, ids: [[ids(b) for b in dataset] for epoch in range(2)]
    # What one machine trains on, and this worker's share, in each of two epochs:
    global_batches = two_epochs(training.make_dataset(x, 8, seed=3, shuffle=True), ids)
    distributed_dataset = strategy.experimental_distribute_dataset(training.make_dataset(x, 8, seed=3, shuffle=True))
    shares = two_epochs(distributed_dataset, lambda b: ids(strategy.experimental_local_results(b)[0]))
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "global": global_batches, "shares": shares}))
    """
)


def test_each_worker_trains_its_own_share_of_every_global_batch():
    """train.batch_size is the global batch: 2 workers each take half of every batch."""
    addresses = [f"127.0.0.1:{p}" for p in local_cluster.free_ports(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHARDING_SCRIPT], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "TF_CONFIG": local_cluster.tf_config(addresses, i)},
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    reports = []
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["replicas"] == 2 for r in reports)
    epochs = reports[0]["global"]
    assert reports[1]["global"] == epochs and [len(e) for e in epochs] == [5, 5]
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    for epoch, global_batches in enumerate(epochs):
        assert sorted(sum(global_batches, [])) == list(range(40))  # every image once
        for step, batch in enumerate(global_batches):
            first, second = (r["shares"][epoch][step] for r in reports)
            assert len(first) == len(second) == 4
            assert sorted(first + second) == batch  # disjoint halves of the same global batch


# TensorFlow's records for a collective aborted by a lost worker, as a surviving chief printed them.
ABORT_RECORDS = [
    "E0000 00:00:1795633078.863817   25490 base_collective_executor.cc:252] BaseCollectiveExecutor::StartAbort "
    "UNAVAILABLE: Error reported from /job:worker/task:1: The following tasks are unhealthy (stopped sending "
    "heartbeats):\n",
    "/job:worker/replica:0/task:1\n",
    "The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, "
    "eviction) to debug further. [type.googleapis.com/tensorflow.CoordinationServiceError='\"\\n\\n\\x06worker']\n",
    "E0000 00:00:1795633078.869274   25490 ring_alg.cc:291] Aborting RingReduce with UNAVAILABLE: Collective ops "
    "is aborted by: Error reported from /job:worker/task:1\n",
    "The error could be from a previous operation. Restart your program to reset.\n",
]
STOPPED_LINE = ("error: multi-worker training stopped on worker 0 of 2 (127.0.0.1:53437): worker 1 (127.0.0.1:39947) "
                "stopped or stopped responding (train.worker_timeout_s = 30 s); UnavailableError; nothing was "
                "written, start all workers again\n")


def feed_all(lines: list[str]) -> list[str]:
    from fashion_vae.peer_loss_filter import PeerLossLines

    kept = PeerLossLines()
    return [out for line in lines for out in kept.feed(line)] + kept.end()


def test_lost_worker_records_give_way_to_the_one_line():
    warning = "/x/keras/src/trainers/trainer.py:12: UserWarning: something a user should see\n"
    assert feed_all([warning, *ABORT_RECORDS, STOPPED_LINE, *ABORT_RECORDS[:2]]) == [warning, STOPPED_LINE]
    # When the peer's connection drops first, ring_alg.cc says only that.
    reset = ("E0000 00:00:1795657963.529792   31302 ring_alg.cc:291] Aborting RingReduce with UNAVAILABLE: "
             "recvmsg:Connection reset by peer\n")
    assert feed_all([reset, STOPPED_LINE]) == [STOPPED_LINE]


def test_records_without_the_one_line_are_all_kept_in_order():
    """Only the stage's line hides them: a run that ends another way loses nothing."""
    other = ["E0000 00:00:1.2   7 some_kernel.cc:1] a different error\n", "after it\n"]
    assert feed_all([*other, *ABORT_RECORDS]) == [*other, *ABORT_RECORDS]


def test_only_the_records_themselves_are_hidden():
    """A traceback, a warning or another log record after a held record releases it: the one
    line hides nothing but the records about the lost worker."""
    traceback = ["Traceback (most recent call last):\n", '  File "x.py", line 1, in <module>\n', "ValueError: boom\n"]
    assert feed_all([*ABORT_RECORDS, *traceback, STOPPED_LINE]) == [*ABORT_RECORDS, *traceback, STOPPED_LINE]
    other_record = "W0000 00:00:1.3   7 other.cc:9] something else\n"
    assert feed_all([*ABORT_RECORDS, other_record, STOPPED_LINE]) == [*ABORT_RECORDS, other_record, STOPPED_LINE]
    # After the one line, records from the shutdown are dropped too; anything else is not.
    at_exit = "Exception ignored in atexit callback\n"
    assert feed_all([STOPPED_LINE, *ABORT_RECORDS[:2], at_exit]) == [STOPPED_LINE, *ABORT_RECORDS[:2], at_exit]
    assert feed_all([STOPPED_LINE, *ABORT_RECORDS[:2]]) == [STOPPED_LINE]


def test_a_stalled_run_keeps_the_records():
    """The watchdog's line for a run without progress names no worker: TensorFlow's records stay."""
    stalled = ("error: multi-worker training stopped on worker 0 of 2 (127.0.0.1:1): no training step finished "
               "for 2 x train.worker_timeout_s = 60 s (a worker stopped or stopped responding)\n")
    assert feed_all([*ABORT_RECORDS, stalled]) == [*ABORT_RECORDS, stalled]


def test_filter_runs_between_a_process_and_its_stderr():
    """The real thing: a child's fd 2, C++-style writes included, through the filter process."""
    code = (
        "import os, sys\n"
        "from fashion_vae import peer_loss_filter\n"
        "peer_loss_filter.install()\n"
        "print('before', file=sys.stderr, flush=True)\n"
        f"os.write(2, {''.join(ABORT_RECORDS).encode()!r})\n"
        f"sys.stderr.write({STOPPED_LINE!r})\n"
        "sys.exit(1)\n"
    )
    with tempfile.TemporaryFile(mode="w+") as stderr:
        status = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stderr=stderr, timeout=60).returncode
        stderr.seek(0)
        written_by_exit = stderr.read()  # the process waits at exit until the filter has written all
    assert status == 1
    assert written_by_exit == "before\n" + STOPPED_LINE
