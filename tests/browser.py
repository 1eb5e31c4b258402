"""Headless Chromium (Debian's package) driven over the DevTools protocol with `websockets`' sync client.

Importable as `browser` from any test module. No browser is downloaded: `scripts/test.sh` installs the
`chromium` package when it is missing. Every wait has a deadline, and the browser is stopped by its PID.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests
from websockets.sync.client import connect

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
        self._closing = contextlib.ExitStack()  # websockets 17.1+: a connection is a context manager
        try:
            # No Origin header (Chromium refuses DevTools connections from other origins); screenshots exceed the
            # default 1 MiB message limit.
            self.ws = self._closing.enter_context(connect(self._page_url(port), open_timeout=timeout, max_size=None))
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
            message = json.loads(self.ws.recv(timeout=self.timeout))
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
        self._closing.close()
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
