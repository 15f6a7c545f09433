"""The files of a comparison under ``--out``: the folder's checks, its lock, atomic writes, and
write failures (a full disk) reported as user errors.

- ``make_out_dir`` checks ``--out`` and creates it, with a ``UsageError`` naming ``--out`` when
  it is empty, a file, under a file, or cannot be written.
- ``OutLock`` makes ``--out`` one process's: ``fcntl.flock`` on ``OUT/.sapa-compare.lock``,
  which holds the PID, host, start time and command of its holder. A second process is refused
  with a message naming the lock file and the holder. The kernel releases a ``flock`` when its
  process dies, however it dies, so the lock left behind by a killed process is free and the
  next process takes it over (and says so). On Linux ``flock`` on NFS is emulated with POSIX
  byte-range locks, which lockd shares between hosts.
- ``atomic_write_*`` / ``atomic_torch_save`` write a temporary file in the same folder and
  ``os.replace`` it over the target, so a reader (or a run killed mid-write) sees the old file
  or the new one, never a torn one; a write that fails because of the file system (no space,
  quota, read-only, file size limit, permissions: ``WRITE_ERRNOS``, or ``torch.save``'s
  "PytorchStreamWriter failed writing file") is a ``UsageError`` naming the file.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import tempfile
import time

import torch

from ..errors import UsageError

LOCK_NAME = ".sapa-compare.lock"
# errno of a failed write that the user can fix (space, permissions, limits), with what it means
WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (file system or ulimit -f limit)",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


# ---- write failures --------------------------------------------------------------------------

def _torch_write_failure(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in text
                                              or "inline_container" in text)


@contextlib.contextmanager
def write_errors(path: str, advice: str = "free some space or choose another --out"):
    """Turn a file-system failure while writing ``path`` into a one-line ``UsageError``:
    ``cannot write PATH: <reason>; <advice>``. Other exceptions pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise UsageError(f"cannot write {path}: {WRITE_ERRNOS[exc.errno]} "
                         f"([Errno {exc.errno}]); {advice}") from exc
    except RuntimeError as exc:
        if not _torch_write_failure(exc):
            raise
        detail = " ".join(str(exc).split("\n")[0].split())
        raise UsageError(f"cannot write {path}: torch.save failed ({detail}): is the disk full? "
                         f"{advice}") from exc


# ---- atomic writes ---------------------------------------------------------------------------

def _temp_beside(path: str) -> tuple[int, str]:
    """A temporary file in ``path``'s folder, with the permissions a new file would get
    (``mkstemp`` makes it private)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=os.path.basename(path) + ".", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def _discard(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def atomic_write_bytes(path: str, data: bytes) -> None:
    with write_errors(path):
        fd, tmp = _temp_beside(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            _discard(tmp)
            raise


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str, obj) -> None:
    """``torch.save`` through a temporary file and ``os.replace``."""
    with write_errors(path, "free some space or choose another --out, then continue with "
                            "--resume"):
        fd, tmp = _temp_beside(path)
        os.close(fd)
        try:
            torch.save(obj, tmp)
            os.replace(tmp, path)
        except BaseException:
            _discard(tmp)
            raise


# ---- the --out folder ------------------------------------------------------------------------

def check_out_dir(out: str) -> None:
    """``UsageError`` naming ``--out`` if it is empty (which would write into the current
    folder), is a file, or lies under a file. Creates nothing."""
    if not isinstance(out, str) or not out.strip():
        raise UsageError(f"--out must name a folder, got {out!r} (an empty --out would write "
                         "into the current folder)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out} is a file, not a folder: choose another --out")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"--out {out} lies under {parent}, which is a file: choose another --out")


def make_out_dir(out: str) -> bool:
    """``check_out_dir``, then create ``out`` (with its parents); ``True`` if this call
    created it.

    Raises:
        UsageError: as ``check_out_dir``, or ``out`` cannot be created (permissions, a
            read-only file system).
    """
    check_out_dir(out)
    if os.path.isdir(out):
        return False
    try:
        os.makedirs(out)
    except OSError as exc:
        reason = WRITE_ERRNOS.get(exc.errno, exc.strerror)
        raise UsageError(f"--out {out} cannot be created: {reason}: choose another --out") from exc
    return True


def _open_lock_file(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        holder = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "a process that wrote no details"
    when = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if isinstance(when, (int, float)) else "?"
    return f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}"


class OutLock:
    """An exclusive lock on an ``--out`` folder for the lifetime of one process (see the
    module docstring). ``acquire`` raises ``UsageError`` when another live process holds it."""

    def __init__(self, out: str):
        self.path = os.path.join(out, LOCK_NAME)
        self.out = out
        self._fd: int | None = None
        self.took_over: dict | None = None  # the holder of a stale lock this one replaced

    def acquire(self, command: str = "") -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        while True:
            try:
                fd = _open_lock_file(self.path)
            except OSError as exc:
                reason = WRITE_ERRNOS.get(exc.errno, exc.strerror)
                raise UsageError(f"--out {self.out} is not writable ({reason}, creating "
                                 f"{self.path}): choose another --out") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise UsageError(
                    f"--out {self.out} is in use by another sapa compare ({_describe(holder)}; "
                    f"lock file {self.path}): wait for it to finish or choose another --out"
                ) from None
            # the previous holder may have removed the file between our open and flock
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = _read_holder(fd)
        self.took_over = stale or None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "command": command}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode("utf-8"))
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (nothing if not held)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(self._fd), os.stat(self.path)):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def describe_stale(self) -> str | None:
        """One line about the stale lock ``acquire`` took over, if it did."""
        if not self.took_over:
            return None
        return (f"took over the stale lock {self.path} of {_describe(self.took_over)}, "
                "which no longer holds it")
