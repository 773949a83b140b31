"""Where a study lives: Optuna's storage, opened with one-line errors.

The default is a SQLite file in the workspace (``search/study.db``): no server, so a study
runs right after ``make repro``. Several machines share one study through a PostgreSQL
server (``postgresql+psycopg://user:password@host:port/database``); each runs its own
driver and DVC queue. Connection problems (a malformed URL, an unreachable server, a wrong
password) stop within about ``CONNECT_TIMEOUT_S`` seconds with one line that never shows
the password.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

from fashion_vae.errors import PipelineError

STATE_DIR = Path("search")  # the default study database and the driver's lock (gitignored)
DEFAULT_STORAGE = f"sqlite:///{STATE_DIR}/study.db"
CONNECT_TIMEOUT_S = 10
SQLITE_BUSY_TIMEOUT_S = 60


def quiet_optuna():
    """Optuna, with its per-trial INFO lines and experimental-feature warnings off."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def safe_url(url: str) -> str:
    """The URL with its password hidden (for messages and records)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: show only its scheme-ish start
        return url.split("@")[-1][:60]


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, None for other storages."""
    prefix = "sqlite:///"
    return Path(url[len(prefix):]) if url.startswith(prefix) else None


def open_storage(url: str):
    """An Optuna ``RDBStorage`` for ``url``; a bad URL or an unreachable server is one line."""
    optuna = quiet_optuna()
    import sqlalchemy.exc

    where = f"--storage {safe_url(url)}"
    path = sqlite_path(url)
    if path is not None:
        if not str(path):
            raise PipelineError(f"{where}: no database file after sqlite:///")
        path.parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    elif url.startswith(("postgresql", "postgres")):
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S}
    else:
        connect_args = {}
    try:
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True})
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Two drivers creating a new database's tables at the same moment: one loses the race
            # on a unique constraint; by now the other has made them.
            time.sleep(1)
            return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args, "pool_pre_ping": True})
    except sqlalchemy.exc.ArgumentError:
        raise PipelineError(
            f"{where}: not a database URL; expected sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as err:
        raise PipelineError(
            f"{where}: no driver for it ({one_line(err)}); use sqlite:/// or postgresql+psycopg://"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as err:
        raise PipelineError(f"{where}: cannot open the study's database ({one_line(err)})") from None


def one_line(err: BaseException) -> str:
    """An exception as one short line: the driver's own message, without SQLAlchemy's footer."""
    original = getattr(err, "orig", None) or err
    text = " ".join(str(original).split()) or type(original).__name__
    text = text.split(" (Background on this error")[0]
    return f"{type(original).__name__}: {text}"[:300]


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a lost database raises from inside Optuna."""
    import optuna
    import sqlalchemy.exc

    return sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError


def load_study(storage, name: str, url: str):
    """An existing study in ``storage`` (opened from ``url``), or one line saying there is none:
    Optuna's own error is "Record does not exist."."""
    try:
        return quiet_optuna().load_study(study_name=name, storage=storage)
    except KeyError:
        raise PipelineError(f"no study named {name!r} in {safe_url(url)}; run python -m fashion_vae.search run "
                            "first") from None
