"""Install requirement files into this virtual environment with uv, as pip would have.

Why: `pip install -r requirements.txt` takes about 145 s on a fresh machine here, 55 s of it
resolving one package index page after another and 60 s compiling bytecode on one core;
uv fetches in parallel and compiles on every core: about 60 s for the same packages.

uv does not read pip's configuration, so this carries it over: the index URLs, find-links
and constraint files, the certificate bundle and the timeout that `pip config list` shows
(configuration files and PIP_* variables alike), and pip's rule that every index is searched
for the best version (uv's default stops at the first index that knows the package).

    python scripts/uv_install.py -r requirements.txt

Exits non-zero if uv is missing or fails; scripts/setup.sh then installs with pip.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

# pip setting -> uv option; the values are whitespace-separated lists in pip's configuration.
LIST_OPTIONS = {"extra-index-url": "--extra-index-url", "find-links": "--find-links", "constraint": "--constraint"}
# A later source wins: the [global] section, then [install], then PIP_* variables.
SECTION_RANK = {"global": 0, "install": 1, ":env:": 2}


def pip_settings() -> dict[str, str]:
    """pip's effective settings for `pip install`, from `pip config list`."""
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    ranked: dict[str, tuple[int, str]] = {}
    for line in listing.splitlines():
        name, _, value = line.partition("=")
        section, _, key = name.rpartition(".")
        if section not in SECTION_RANK or not value:
            continue
        rank = SECTION_RANK[section]
        if key not in ranked or rank >= ranked[key][0]:
            ranked[key] = (rank, ast.literal_eval(value))
    return {key: value for key, (_, value) in ranked.items()}


def uv_command(uv: str, settings: dict[str, str], requirements: list[str]) -> tuple[list[str], dict[str, str]]:
    command = [uv, "pip", "install", "--quiet", "--python", sys.executable, "--compile-bytecode"]
    if "index-url" in settings:
        command += ["--index-url", settings["index-url"]]
    for key, option in LIST_OPTIONS.items():
        for value in settings.get(key, "").split():
            command += [option, value]
    if "extra-index-url" in settings:
        command += ["--index-strategy", "unsafe-best-match"]
    env = dict(os.environ)
    if "cert" in settings:
        env.setdefault("SSL_CERT_FILE", settings["cert"])
    if "default-timeout" in settings:
        env.setdefault("UV_HTTP_TIMEOUT", settings["default-timeout"])
    for path in requirements:
        command += ["-r", path]
    return command, env


def main(argv: list[str]) -> int:
    requirements = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-r"]
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    if not requirements or uv is None:
        print("uv_install: needs `-r FILE` and uv in this environment", file=sys.stderr)
        return 2
    command, env = uv_command(uv, pip_settings(), requirements)
    return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
