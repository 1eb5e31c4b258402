"""A network namespace of a test's own, for peers that drop SYNs as a network policy would.

Everything runs inside the namespace (its own loopback, an address of its own, its own iptables rules): no
packet leaves it, and deleting it removes all of it. A thread enters it with setns(2); sockets it makes there
stay there when other threads use them (a server's accept loop, say).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


class Namespace:
    def __init__(self, name: str, address: str) -> None:
        self.name, self.address = name, address

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", "-n", self.name, *args], check=True, capture_output=True)

    def iptables(self, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, "iptables", *args], check=True, capture_output=True)

    def run(self, fn: Callable[[], T]) -> T:
        """fn() called in a thread inside the namespace; its result, or its exception raised here."""
        out: dict[str, T] = {}
        err: list[BaseException] = []

        def inside() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                finally:
                    os.close(fd)
                out["result"] = fn()
            except BaseException as exc:
                err.append(exc)

        thread = threading.Thread(target=inside)
        thread.start()
        thread.join()
        if err:
            raise err[0]
        return out["result"]


@contextmanager
def namespace(address: str = "10.213.0.1") -> Iterator[Namespace]:
    """A fresh namespace with its loopback up and `address` on it (skips without root, ip or iptables)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace")
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (iproute2 / iptables)")
    name = f"gymserve-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        ns = Namespace(name, address)
        ns.ip("link", "set", "lo", "up")
        ns.ip("addr", "add", f"{address}/32", "dev", "lo")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
