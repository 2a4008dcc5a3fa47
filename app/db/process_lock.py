"""One `agent-sessions serve` per SQLite database: an operating-system lock held for
the life of the process.

SQLite is the one-process embedded default (SPEC v2.1): the runner, the event
broker and the sequence numbers of a database live in one process, and only
Postgres coordinates several replicas. `acquire_sqlite_lock` takes an exclusive,
non-blocking `flock` on a lock file next to the database (`<database>.lock`) and
keeps its descriptor open until the process ends. The kernel drops the lock
with the descriptor, however the process ends (SIGKILL, a crash, OOM), so a
killed service restarts at once: no stale lock file to remove, no time-out.
The file itself stays; it holds the pid of the last owner, for the message.

Which databases are locked:

- a file path (`sqlite:///data/x.db`, `sqlite:////abs/x.db`): the file, resolved
  to an absolute path with symlinks followed, so two spellings of one file
  (relative and absolute, through a symlink) take the same lock;
- in-memory databases (`sqlite://`, `:memory:`, a `mode=memory` URI): no lock,
  nothing is shared between processes;
- `file:` URIs (with `?uri=true`, as the driver needs them): the path of the
  URI when it names a local file (`file:x.db`, `file:///abs/x.db`,
  `file://localhost/abs/x.db`, percent-escapes decoded); no lock when it names
  none (`file::memory:`, `vfs=memdb`, another host). Without `uri=true` the
  driver opens `file:...` as a plain relative file name, and so does this;
- Postgres and other databases: no lock (replicas are what they are for).

The lock is advisory and POSIX-only (`fcntl.flock`), and only `serve` takes it:
it guards against a second service, not against other programs writing the
file. The descriptor is opened close-on-exec, so processes the service starts
(the browser's driver) never inherit it and cannot keep it alive after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sqlalchemy.engine import URL

from app.db.engine import async_url

LOCK_SUFFIX = ".lock"
_TRUE = ("1", "true", "yes", "on")


class ProcessLockError(RuntimeError):
    """The SQLite database cannot be locked for this process; the message says why."""


class DatabaseInUseError(ProcessLockError):
    """Another process holds the SQLite database's lock; the message says what to do."""


@dataclass
class ProcessLock:
    """An acquired lock: held while `fd` is open, released by `release` or process exit."""

    path: Path
    database: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            # Closing the descriptor releases the flock.
            os.close(self.fd)
            self.fd = -1


def sqlite_database_file(url: str) -> Path | None:
    """The file a SQLite `url` opens, absolute; None for in-memory SQLite, for a
    `file:` URI that names no local file, and for other databases."""
    parsed = async_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if _query_value(parsed, "uri").lower() in _TRUE:
        name = _uri_path(parsed)
    else:
        # As the driver does: no URI parsing, the query is ignored.
        name = parsed.database or ""
        if name in ("", ":memory:"):
            return None
    if name is None:
        return None
    # No `~` expansion: the driver does none either.
    return Path(name).resolve()


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + LOCK_SUFFIX)


def acquire_sqlite_lock(url: str) -> ProcessLock | None:
    """Lock the SQLite database of `url` for this process, or return None when there is
    nothing to lock (see the module's docstring). Raises `DatabaseInUseError` when
    another process holds it, `ProcessLockError` when the lock file cannot be made."""
    database = sqlite_database_file(url)
    if database is None:
        return None
    path = lock_path(database)
    try:
        # SQLite creates the database file but not its directory; the service makes it
        # (app.db.engine), and the lock file, taken before, needs it too.
        database.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ProcessLockError(
            f"cannot create the lock file {path} of the SQLite database: {exc.strerror or exc}"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(fd)
        os.close(fd)
        by = f"another agent-sessions process (pid {owner})" if owner else "another process"
        raise DatabaseInUseError(
            f"the SQLite database {database} is already in use by {by}: SQLite serves "
            "one process only; use Postgres (DATABASE_URL=postgresql://...) to run "
            "several replicas"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # the pid is only a hint for the message
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return ProcessLock(path, database, fd)


def _read_owner(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _query_value(url: URL, key: str) -> str:
    value = url.query.get(key, "")
    if isinstance(value, tuple):
        value = value[-1] if value else ""
    return value


def _uri_path(url: URL) -> str | None:
    """The local file path of a SQLite `file:` URI, None if it names no local file."""
    if _query_value(url, "mode") == "memory" or _query_value(url, "vfs") == "memdb":
        return None
    database = url.database or ""
    if not database.startswith("file:"):
        # uri=true with a plain name: SQLite opens it as a file name.
        return None if database in ("", ":memory:") else database
    parts = urlsplit(database)
    if parts.netloc not in ("", "localhost"):
        return None
    path = unquote(parts.path)
    if path in ("", ":memory:"):
        return None
    return path
