"""Drive headless Chromium through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
the browser reads commands from its fd 3 and writes answers to its fd 4, each message JSON
ended by a NUL byte), with the standard library only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    return path


class Browser:
    """One headless Chromium with one page; :meth:`send` runs a DevTools command on the page."""

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
                "--remote-debugging-pipe", "about:blank"]

        def on_fds_3_and_4() -> None:  # in the child, before exec: our pipe ends where Chromium expects them
            import fcntl

            # through copies above 9 first: when a pipe end is fd 3 or 4 already, dup2 onto itself
            # would keep it close-on-exec and Chromium would not get it
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(args, preexec_fn=on_fds_3_and_4, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []
        target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Runtime.enable")

    def _call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            if not select.select([self._from_browser], [], [], max(deadline - time.monotonic(), 0))[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None) -> dict:
        return self._call(method, params, session=self.session)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"].get("text"))
        return res["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30):
        """Poll ``expression`` until it is truthy (an exception counts as not yet); returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is (re)loading: its elements are not there yet
                value = None
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"the page never satisfied {expression!r}")

    def press(self, key: str) -> None:
        """A real key press (down, up) in the page."""
        text = key if len(key) == 1 else ""
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": key, "text": text})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key})

    def console_errors(self) -> list[str]:
        return [json.dumps(e["params"])[:300] for e in self.events
                if e.get("method") == "Runtime.exceptionThrown"
                or (e.get("method") == "Runtime.consoleAPICalled" and e["params"].get("type") == "error")]

    def close(self) -> None:
        try:
            self._call("Browser.close", timeout=10)
        except Exception:
            pass
        self.proc.kill()
        self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
