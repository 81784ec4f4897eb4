"""Directory locks: one process at a time trains a cell (or writes a sweep's leaderboard).

The same sweep submitted twice, or run from two shells, must never have two processes training
and writing one run directory. A lock is an ``flock`` on a hidden file in the directory: the
kernel (or the NFS server, which Linux's NFS client forwards flock to) releases it when its holder
exits, even by SIGKILL or a node's death, so there is never a stale lock to clean up. The file
itself is left in place: deleting it would let a third process lock a new file while the second
still waits on the old one.

Locks are re-entrant within a process: the submitit launchers lock a cell before Hydra writes
its directory, and the task function (``noisybench.__main__.main``) locks it again around the run.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

CELL_LOCK_FILE = ".lock"
LEADERBOARD_LOCK_FILE = ".leaderboard.lock"
# How long a cell's lock is waited for before the cell is skipped: long enough for a holder that
# is exiting (a requeued job, a lock released over NFS), short enough that a sweep that finds
# another sweep training a cell moves on to the next one.
CELL_WAIT_S = 5.0
POLL_S = 0.2

# path -> [file descriptor, depth] for the locks this process holds.
_held: dict[str, list[int]] = {}


def holder_note() -> str:
    """Who holds a lock: host, PID and the SLURM job when there is one."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job and "SLURM_ARRAY_TASK_ID" in os.environ \
        else os.environ.get("SLURM_JOB_ID")
    return f"pid {os.getpid()} on {socket.gethostname()}" + (f", SLURM job {job}" if job else "")


class DirLock:
    """``with DirLock(folder) as lock:`` then ``lock.held``; when not held, ``lock.holder`` says who
    holds it. ``wait_s`` bounds the wait (0: one try)."""

    def __init__(self, folder: Path, name: str = CELL_LOCK_FILE, wait_s: float = CELL_WAIT_S):
        self.path = Path(folder).absolute() / name
        self.wait_s = wait_s
        self.held = False
        self.holder = ""

    def acquire(self) -> bool:
        key = str(self.path)
        if key in _held:
            _held[key][1] += 1
            self.held = True
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.holder = _read_note(fd) or "another process"
                    os.close(fd)
                    return False
                time.sleep(POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_note() + "\n").encode(), 0)
        _held[key] = [fd, 1]
        self.held = True
        return True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        entry = _held[str(self.path)]
        entry[1] -= 1
        if entry[1] == 0:
            del _held[str(self.path)]
            os.close(entry[0])  # closing the only descriptor releases the flock

    def __enter__(self) -> "DirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read_note(fd: int) -> str:
    try:
        return os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        return ""
