"""fetch: verification by decompressed SHA-256, fallback order, nothing written on failure."""
import gzip
import http.server
import shutil
import threading
from functools import partial

import pytest

from fashion_vae import dataset
from fashion_vae.errors import PipelineError


def copy_sources(raw_dir, dest):
    dest.mkdir()
    for spec in dataset.RAW_FILES.values():
        shutil.copy(raw_dir / spec.name, dest / spec.name)
    return dest


@pytest.fixture
def good_dir(raw_dir, tmp_path):
    return copy_sources(raw_dir, tmp_path / "good")


def corrupt(path):
    """Flip one decompressed byte and recompress: a valid gzip with the wrong content."""
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[-1] ^= 0xFF
    path.write_bytes(gzip.compress(bytes(data), compresslevel=1))  # level 9 takes ~15 s of CPU on 47 MB


def test_fetch_all_writes_four_verified_files(good_dir, tmp_path):
    out = tmp_path / "raw"
    written = dataset.fetch_all([str(good_dir)], out, timeout_s=5)
    assert sorted(p.name for p in out.iterdir()) == sorted(s.name for s in dataset.RAW_FILES.values())
    for key, path in written.items():
        assert path.read_bytes() == (good_dir / dataset.RAW_FILES[key].name).read_bytes()


def test_checksum_failure_writes_nothing(good_dir, tmp_path):
    corrupt(good_dir / "t10k-labels-idx1-ubyte.gz")
    out = tmp_path / "raw"
    with pytest.raises(PipelineError) as err:
        dataset.fetch_all([str(good_dir)], out, timeout_s=5)
    message = str(err.value)
    assert "no source served a verified t10k-labels-idx1-ubyte.gz" in message
    assert "does not match the official 0402a96d" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert not out.exists() or not any(out.iterdir())


def test_truncated_gzip_is_reported(good_dir, tmp_path):
    path = good_dir / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(PipelineError, match="not a complete gzip file"):
        dataset.fetch_all([str(good_dir)], tmp_path / "raw", timeout_s=5)


def test_sources_are_tried_in_order(good_dir, tmp_path, capsys):
    broken = copy_sources(good_dir, tmp_path / "broken")
    corrupt(broken / "train-images-idx3-ubyte.gz")
    missing = tmp_path / "missing"
    dataset.fetch_all([str(missing), str(broken), str(good_dir)], tmp_path / "raw", timeout_s=5)
    captured = capsys.readouterr()
    log = captured.out
    assert captured.err == ""  # stderr is for a failure's one line only
    # train images: missing, then broken, then good; the others come from `broken`.
    assert log.index(f"skipped {missing}/train-images-idx3-ubyte.gz: missing") < log.index(
        f"skipped {broken}/train-images-idx3-ubyte.gz: SHA-256"
    ) < log.index(f"{good_dir}/train-images-idx3-ubyte.gz verified")
    assert f"{broken}/train-labels-idx1-ubyte.gz verified" in log


@pytest.fixture
def http_server(good_dir):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(good_dir))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_url_source_after_missing_directory(http_server, tmp_path, capsys):
    out = tmp_path / "raw"
    dataset.fetch_all([str(tmp_path / "nowhere"), http_server + "/"], out, timeout_s=5)
    assert len(list(out.iterdir())) == 4
    assert f"{http_server}/t10k-images-idx3-ubyte.gz verified" in capsys.readouterr().out


def test_unreachable_url_is_reported(tmp_path):
    with pytest.raises(PipelineError, match=r"http://127\.0\.0\.1:9/train-images-idx3-ubyte\.gz: download failed"):
        dataset.fetch_all(["http://127.0.0.1:9"], tmp_path / "raw", timeout_s=2)


def test_load_raw_reverifies(good_dir):
    labels = dataset.load_raw(good_dir, "test_labels")
    assert labels.shape == (10_000,) and labels.max() == 9
    corrupt(good_dir / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(PipelineError, match="t10k-labels-idx1-ubyte.gz: SHA-256"):
        dataset.load_raw(good_dir, "test_labels")


def test_a_decompression_bomb_is_cut_off_at_the_official_size():
    """About 1 MB of gzip that would expand to 1 GiB: decompression stops one byte past the size."""
    import gzip as gz

    from fashion_vae import dataset as ds

    spec = ds.RAW_FILES["test_labels"]
    # 1,024 gzip members of 1 MiB of zeros each: one valid .gz file (gzip readers join the members),
    # made in milliseconds where compressing 1 GiB as one member takes 6 s of CPU.
    blob = gz.compress(b"\0" * (1 << 20), compresslevel=9) * 1024
    assert len(blob) < 2 << 20
    with pytest.raises(PipelineError, match=rf"bomb\.gz: decompresses to more than {spec.size} bytes; "
                       rf"expected {spec.size}$"):
        ds.decompress_verified(blob, spec, "bomb.gz")
