"""Headless Chromium (Debian's package) driven over the DevTools protocol by a minimal websocket client.

Importable as `browser` from any test module. No browser is downloaded: `scripts/test.sh` installs the
`chromium` package when it is missing. Every wait has a deadline, and the browser is stopped by its PID.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from servers import free_port

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
)


def executable() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames out (masked), text frames in."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.reader = self.sock.makefile("rb")
        status = self.reader.readline()
        assert b" 101 " in status, status
        while self.reader.readline() not in (b"\r\n", b""):
            pass

    def send(self, text: str) -> None:
        payload = text.encode()
        size = len(payload)
        header = b"\x81" + (
            bytes([0x80 | size])
            if size < 126
            else bytes([0x80 | 126]) + struct.pack(">H", size)
            if size < 65536
            else bytes([0x80 | 127]) + struct.pack(">Q", size)
        )
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                (size,) = struct.unpack(">H", self._read(2))
            elif size == 127:
                (size,) = struct.unpack(">Q", self._read(8))
            payload = self._read(size)
            if opcode == 0x8:
                raise ConnectionError("the browser closed the DevTools connection")
            if opcode in (0x9, 0xA):  # ping, pong: the browser does not send them to clients; ignore
                continue
            message += payload
            if first & 0x80:  # FIN: the message is whole
                return message.decode()

    def _read(self, size: int) -> bytes:
        data = self.reader.read(size)
        if len(data) != size:
            raise ConnectionError("the DevTools connection ended")
        return data

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class Chromium:
    """One headless Chromium with a fresh profile, and its one page."""

    def __init__(self, workdir: Path, width: int = 1280, height: int = 900, timeout: float = 20) -> None:
        path = executable()
        assert path, "chromium is not installed: scripts/test.sh installs Debian's package (apt-get install chromium)"
        self.timeout = timeout
        port = free_port()
        self.log_path = workdir / "chromium.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    path,
                    *FLAGS,
                    f"--user-data-dir={workdir / 'chromium-profile'}",
                    f"--remote-debugging-port={port}",
                    f"--window-size={width},{height}",
                    "about:blank",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.ws = WebSocket(self._page_url(port), timeout)
            self._ids = itertools.count(1)
            self.events: list[dict[str, Any]] = []  # only from domains a test enables (e.g. Network.enable)
            metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
            self.call("Emulation.setDeviceMetricsOverride", **metrics)
        except BaseException:
            self.stop()
            raise

    def _page_url(self, port: int) -> str:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}:\n{self.log()}")
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
                if pages:
                    return pages[0]
            except (requests.ConnectionError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"chromium's DevTools did not answer within {self.timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result; events that arrive meanwhile are kept in `events`."""
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.receive())
            if "method" in message and len(self.events) < 10_000:
                self.events.append(message)
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """The first truthy value of `expression`, polled; fails after `timeout` seconds."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout or self.timeout}s: {expression}")
            time.sleep(0.1)

    def screenshot(self, selector: str | None = None) -> bytes:
        """A PNG of the page's viewport, or of the element that `selector` finds."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            box = self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
            )
            params["clip"] = {**box, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])

    def stop(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the renderer and GPU children go too
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
