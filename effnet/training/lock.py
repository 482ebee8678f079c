"""One trainer per run folder: an fcntl lock file holding the owner's pid.

The kernel drops an fcntl lock when its process dies, so a lock left by a killed run (stale) is
simply taken over by the next one. A run that ends (finished or failed) removes its lock file.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class RunLock:
    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    owner = os.read(fd, 32).decode().strip() or "?"
                finally:
                    os.close(fd)
                raise ValueError(
                    f"run folder {self.path.parent} is in use by another training process "
                    f"(pid {owner}); wait for it or pick another --out"
                ) from None
            if self._still_linked(fd):
                break
            os.close(fd)  # its holder removed it as we locked it: lock the file now at the path
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    @staticmethod
    def check(run_dir: str | os.PathLike) -> None:
        """Raise the 'in use' ValueError if a live process holds ``run_dir``'s lock."""
        if (Path(run_dir) / ".lock").exists():
            RunLock(run_dir).acquire().release()

    def _still_linked(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one locks a removed file), then
        unlock."""
        if self._fd is not None:
            if self._still_linked(self._fd):
                self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
