"""The replica table: the workers' socket directory, their live-env counts, and this process's slot in it."""

from __future__ import annotations

import ctypes
import glob
import multiprocessing
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

_SOCKET_RE = re.compile(r"worker-([0-9]{1,3})\.sock")


@dataclass
class Replica:
    """What the gunicorn master sets up before forking: the socket directory and live-env counts per slot."""

    runtime_dir: str
    counts: Any  # multiprocessing RawArray of c_long, one entry per worker slot, shared by fork

    @property
    def slots(self) -> int:
        return len(self.counts)

    def socket_path(self, slot: int) -> str:
        return os.path.join(self.runtime_dir, f"worker-{slot}.sock")

    def live_slots(self) -> list[int]:
        """Slots whose worker has its socket up (it may still have died a moment ago)."""
        paths = glob.glob(os.path.join(self.runtime_dir, "worker-*.sock"))
        found = (_SOCKET_RE.fullmatch(os.path.basename(p)) for p in paths)
        return sorted(int(m[1]) for m in found if m)

    def total_envs(self) -> int:
        return int(sum(self.counts))

    def set_count(self, slot: int, n: int) -> None:
        self.counts[slot] = n

    def mark_stuck(self, generation: int) -> None:
        """The master killed this generation's worker, stuck (its heartbeat stopped): its envs' ids say why."""
        with open(os.path.join(self.runtime_dir, f"stuck-{generation}"), "w"):
            pass

    def was_stuck(self, generation: int) -> bool:
        return os.path.exists(os.path.join(self.runtime_dir, f"stuck-{generation}"))


def make_replica(runtime_dir: str, slots: int) -> Replica:
    """Called once in the gunicorn master, before any worker forks."""
    if runtime_dir:
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        for stale in glob.glob(os.path.join(runtime_dir, "worker-*.sock")):
            os.unlink(stale)
    else:
        runtime_dir = tempfile.mkdtemp(prefix="gymserve-")
    return Replica(runtime_dir, multiprocessing.RawArray(ctypes.c_long, slots))


@dataclass(frozen=True)
class WorkerSlot:
    """This process's place in the replica, set by gunicorn's post_fork hook before the app is built."""

    replica: Replica
    slot: int
    generation: int


_current: WorkerSlot | None = None


def adopt(slot: WorkerSlot) -> None:
    global _current
    _current = slot


def current() -> WorkerSlot | None:
    return _current
