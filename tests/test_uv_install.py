"""scripts/uv_install.py carries pip's configuration over to uv."""
import importlib.util
import itertools
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("uv_install", REPO_ROOT / "scripts" / "uv_install.py")
uv_install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(uv_install)


def test_pip_settings_read_files_and_variables_with_variables_winning(tmp_path, monkeypatch):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nextra-index-url = file:///srv/a file:///srv/b\nfind-links = /srv/files\n"
                      "[install]\nfind-links = /srv/install-files\n")
    for name in [name for name in os.environ if name.startswith("PIP_")]:
        monkeypatch.delenv(name)  # this machine's own PIP_* settings would win over the file
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_CONSTRAINT", str(tmp_path / "caps.txt"))
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "99")
    settings = uv_install.pip_settings()
    assert settings["extra-index-url"] == "file:///srv/a file:///srv/b"
    assert settings["find-links"] == "/srv/install-files"  # [install] over [global]
    assert settings["constraint"] == str(tmp_path / "caps.txt")
    assert settings["default-timeout"] == "99"


def test_uv_command_has_every_setting_and_pips_index_rule(monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("UV_HTTP_TIMEOUT", raising=False)
    settings = {"index-url": "https://mirror/simple", "extra-index-url": "file:///a file:///b",
                "find-links": "/w", "constraint": "/c.txt", "cert": "/ca.pem", "default-timeout": "60"}
    command, env = uv_install.uv_command("/venv/bin/uv", settings, ["requirements.txt"])
    assert command[:3] == ["/venv/bin/uv", "pip", "install"]
    pairs = list(itertools.pairwise(command))
    for pair in [("--python", sys.executable), ("--index-url", "https://mirror/simple"),
                 ("--extra-index-url", "file:///a"), ("--extra-index-url", "file:///b"), ("--find-links", "/w"),
                 ("--constraint", "/c.txt"), ("--index-strategy", "unsafe-best-match"), ("-r", "requirements.txt")]:
        assert pair in pairs, pair
    assert "--compile-bytecode" in command
    assert env["SSL_CERT_FILE"] == "/ca.pem" and env["UV_HTTP_TIMEOUT"] == "60"


def test_without_extra_indexes_uv_keeps_its_own_index_rule():
    command, _ = uv_install.uv_command("uv", {}, ["r.txt"])
    assert "--index-strategy" not in command and "--extra-index-url" not in command
