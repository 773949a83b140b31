#!/usr/bin/env bash
# Idempotent set-up: Debian's Fashion-MNIST package (where apt exists), Debian's chromium and
# postgresql when WITH_BROWSER=1 and WITH_POSTGRES=1 (`make test` sets both), a virtual environment
# with the pinned packages, and the offline plots page template.
# Re-running it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
DATA_DIR=/usr/share/datasets/fashion-mnist
UV_VERSION=0.13.9  # the installer only: what is installed is pinned in requirements.txt

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

apt_install() {  # apt_install PACKAGE...: install, running apt-get update first if unknown
  command -v apt-get >/dev/null || return 1
  local pkg
  for pkg in "$@"; do
    if ! apt-cache show "$pkg" >/dev/null 2>&1; then
      as_root apt-get update -qq || return 1
      break
    fi
  done
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

python_packages() {  # the virtual environment with the pinned packages
  if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  stamp="$VENV/.requirements.sha256"
  want=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing pinned Python packages (first time: a few minutes)"
    # Both TensorFlow builds install the same `tensorflow` package: drop the one not pinned.
    for build in tensorflow tensorflow-cpu; do
      if ! grep -Eq "^$build(\[[a-z-]+\])?==" requirements.txt && "$VENV/bin/python" -m pip show -q "$build" 2>/dev/null; then
        "$VENV/bin/python" -m pip uninstall -q -y "$build"
      fi
    done
    # uv, with pip's configuration carried over, takes about 60 s where pip takes 145 s
    # (scripts/uv_install.py says why); pip remains the fallback.
    if ! { "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION" \
           && "$VENV/bin/python" scripts/uv_install.py -r requirements.txt; }; then
      echo "setup: uv unavailable or failed; installing with pip"
      "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt
    fi
    echo "$want" > "$stamp"
  fi
}

# The packages install in the background while apt works: the two share little but the wait.
python_packages &
packages=$!
trap 'kill "$packages" 2>/dev/null || true' EXIT  # a failed apt step stops it too

if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ]; then
  echo "setup: installing Debian's dataset-fashion-mnist"
  apt_install dataset-fashion-mnist || echo "setup: apt unavailable; fetch will try the URLs in params.yaml"
fi

have_chromium() {  # the names tests/test_browser.py looks for, or CHROMIUM_PATH
  if [ -n "${CHROMIUM_PATH:-}" ]; then [ -x "$CHROMIUM_PATH" ]; return; fi
  command -v chromium || command -v chromium-browser || command -v google-chrome \
    || command -v google-chrome-stable
} >/dev/null

# WITH_BROWSER=1 (`make test` sets it): the browser tests need a Chromium. When none can be
# installed they skip, so say so loudly here; with REQUIRE_BROWSER=1 (CI) stop instead.
if [ "${WITH_BROWSER:-0}" = 1 ] && ! have_chromium; then
  echo "setup: installing Debian's chromium for the browser tests"
  if ! { apt_install chromium fonts-dejavu-core && have_chromium; }; then
    if [ "${REQUIRE_BROWSER:-0}" = 1 ]; then
      echo "setup: error: REQUIRE_BROWSER=1 but chromium could not be installed (apt-get install chromium, as root)" >&2
      exit 1
    fi
    echo "setup: WARNING: could not install chromium (needs apt and root or sudo); the browser tests" \
         "will be SKIPPED. Install it (apt-get install chromium) or set CHROMIUM_PATH to a Chromium." >&2
  fi
fi

have_postgres() {  # the server binaries tests/pg_server.py looks for (Debian's postgresql package)
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || [ -x "${POSTGRES_BIN:-/nonexistent}/initdb" ]
}

# WITH_POSTGRES=1 (`make test` sets it): a PostgreSQL server for the shared-study test, which starts its
# own on 127.0.0.1 in a scratch directory. Debian's package would also create and start a cluster of
# its own on port 5432: told not to, so nothing runs that a test did not start.
if [ "${WITH_POSTGRES:-0}" = 1 ] && ! have_postgres; then
  echo "setup: installing Debian's postgresql for the shared-study test"
  if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    as_root mkdir -p /etc/postgresql-common && echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null || true
  fi
  if ! { apt_install postgresql && have_postgres; }; then
    if [ "${REQUIRE_POSTGRES:-0}" = 1 ]; then
      echo "setup: error: REQUIRE_POSTGRES=1 but postgresql could not be installed (apt-get install postgresql, as root)" >&2
      exit 1
    fi
    echo "setup: WARNING: could not install postgresql; tests/test_search_postgres.py will be SKIPPED" >&2
  fi
fi

wait "$packages" || { echo "setup: error: installing the Python packages failed (see above)" >&2; exit 1; }

if [ -f scripts/build_plots_template.py ]; then
  "$VENV/bin/python" scripts/build_plots_template.py
fi
