"""Debian's Firefox ESR for the browser tests, driven through its built-in Marionette server with Mozilla's
`marionette-driver` client (no geckodriver; /work/shared/notes/firefox.md says what works on these machines).

Each `Firefox` is a headless browser of one test: a fresh profile in a temporary folder (the prefs below: fake
microphone and camera, loopback ICE candidates, the page's console on stdout), Marionette on a port Firefox picks
itself, the microphone (and camera) permission stored for the exact origin of the page, and at the end a quit
(by PID if Marionette cannot) and the profile deleted.

`FirefoxPage` is its page seen from asyncio: every Marionette call runs in a worker thread, so that Playwright's
events (the Chromium side of a mixed test) keep arriving meanwhile. Its `evaluate(expression, arg)` takes the
same JavaScript function expressions as Playwright's `page.evaluate`, so the steps of steps.py work on both.

A page's errors (`FirefoxPage.errors()`) are what it logged with `console.error` once loaded (kept by the page
itself) and the uncaught errors that Firefox prints on stdout with a script URL at the page's origin; Firefox's
internal errors (`resource://`, `chrome://`) and its own console output, which it prints there too, are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    # On import, marionette-driver's dependencies call distro's deprecated linux_distribution() (mozinfo) and
    # import telnetlib (mozrunner's emulator support, with a fallback for Python 3.13): nothing the tests use.
    warnings.simplefilter("ignore", DeprecationWarning)
    from marionette_driver.by import By
    from marionette_driver.errors import MarionetteException
    from marionette_driver.marionette import Marionette

FIREFOX = Path("/usr/bin/firefox-esr")
"""Debian's Firefox ESR (scripts/install-system-deps installs it)."""

PREFS: dict[str, bool | int | str] = {
    "media.navigator.streams.fake": True,  # a fake microphone (a steady 1 kHz tone) and camera
    "media.navigator.permission.disabled": True,  # no getUserMedia prompt
    "media.peerconnection.ice.loopback": True,  # 127.0.0.1 host candidates
    "media.peerconnection.ice.obfuscate_host_addresses": False,  # real addresses, not mDNS names
    "media.autoplay.default": 0,  # the remote <audio> plays without a gesture
    "devtools.console.stdout.content": True,  # the page's console calls go to stdout
    "devtools.console.stdout.chrome": False,  # and less of the browser's own
    "messaging-system.rsexperimentloader.enabled": False,  # no experiments fetched (their failure is logged)
    "app.shield.optoutstudies.enabled": False,
    "browser.dom.window.dump.enabled": True,  # uncaught errors print as `JavaScript error: URL, line N: …`
    "marionette.port": 0,  # Firefox picks a free port and writes it to <profile>/MarionetteActivePort
    "browser.startup.page": 0,
    "browser.shell.checkDefaultBrowser": False,
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.update.enabled": False,
    "browser.newtabpage.enabled": False,
}

# Run in the page once it has loaded (Marionette has no script that runs before the page's own): keep the text of
# every console.error call in window.__firefoxConsoleErrors. Firefox prints them on stdout too, but without the
# page's URL, among the browser's own console output.
RECORD_CONSOLE_ERRORS = """() => {
  if (window.__firefoxConsoleErrors) return;
  const logged = (window.__firefoxConsoleErrors = []);
  const original = console.error.bind(console);
  const text = (value) => {
    if (typeof value === "string") return value;
    if (value instanceof Error) return String(value);
    try { return JSON.stringify(value); } catch { return String(value); }
  };
  console.error = (...args) => {
    logged.push(args.map(text).join(" "));
    original(...args);
  };
}"""
JS_ERROR = re.compile(r"^JavaScript error: (?P<url>\S+), line \d+: ")
START_TIMEOUT = 30.0  # seconds for Firefox to open its Marionette port (about 1.5-3 s here)
SOCKET_TIMEOUT = 45.0  # seconds for any Marionette answer (marionette-driver's default is 6 minutes)


@dataclass
class Firefox:
    """A running headless Firefox ESR with a Marionette session; `output` is everything it printed so far."""

    proc: subprocess.Popen[str]
    profile: Path
    marionette: Marionette
    output: list[str]
    reader: threading.Thread

    def grant(self, origin: str, *permissions: str) -> None:
        """Store `permissions` ("microphone", "camera") as allowed for `origin` (scheme://host:port).

        Inside the loopback-only namespace Firefox gathers no ICE candidates for a page whose origin holds no
        stored microphone permission (the fake device and `permission.disabled` do not count).
        """
        m = self.marionette
        m.set_context("chrome")
        try:
            m.execute_script(
                """const [origin, names] = arguments;
                const principal = Services.scriptSecurityManager.createContentPrincipalFromOrigin(origin);
                for (const name of names) Services.perms.addFromPrincipal(principal, name, Services.perms.ALLOW_ACTION);
                """,
                script_args=[origin, list(permissions)],
            )
        finally:
            m.set_context("content")

    def uncaught_errors(self, origin: str, start: int = 0) -> list[str]:
        """The uncaught errors (exceptions, rejections) of scripts at `origin` that Firefox printed, from line
        `start` of its output on. Firefox's internal ones (`resource://`, `chrome://`) are left out."""
        return [
            line for line in self.output[start:] if (m := JS_ERROR.match(line)) and m["url"].startswith(origin + "/")
        ]

    def quit(self) -> None:
        """Quit through Marionette, then by PID if Firefox is still there; delete the profile."""
        try:
            with contextlib.suppress(MarionetteException, OSError):
                self.marionette._request_in_app_shutdown(flags=["eForceQuit"])
            with contextlib.suppress(MarionetteException, OSError):
                self.marionette.delete_session(send_request=False)
        finally:
            _stop(self.proc, self.profile, self.reader)


def _stop(proc: subprocess.Popen[str], profile: Path, reader: threading.Thread) -> None:
    """Wait a little for Firefox to end, then kill its process group; delete the profile."""
    try:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    finally:
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(profile, ignore_errors=True)


def start_firefox(*, extra_prefs: dict[str, bool | int | str] | None = None) -> Firefox:
    """A headless Firefox ESR on a fresh profile, with a Marionette session in the content context."""
    if not os.access(FIREFOX, os.X_OK):
        pytest.fail(
            f"{FIREFOX} is missing: install Debian's Firefox ESR (apt-get install -y firefox-esr; "
            "scripts/install-system-deps does). Playwright's own Firefox cannot be downloaded here.",
            pytrace=False,
        )
    profile = Path(tempfile.mkdtemp(prefix="peercall-firefox-"))
    prefs = {**PREFS, **(extra_prefs or {})}
    (profile / "user.js").write_text(
        "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
    )
    proc = subprocess.Popen(
        [
            *(str(FIREFOX), "--headless", "--marionette", "--remote-allow-system-access", "--no-remote"),
            *("--profile", str(profile), "about:blank"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group: killpg stops every Firefox process at once
        env={**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1"},
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    port_file = profile / "MarionetteActivePort"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"Firefox did not open its Marionette port within {START_TIMEOUT:.0f}s "
                    f"(exit code {proc.poll()}):\n" + "\n".join(lines)
                )
            time.sleep(0.05)
        marionette = Marionette(
            host="127.0.0.1", port=int(port_file.read_text()), socket_timeout=SOCKET_TIMEOUT, startup_timeout=10
        )
        firefox = Firefox(proc, profile, marionette, lines, reader)
        marionette.start_session()
    except BaseException:
        _stop(proc, profile, reader)
        raise
    return firefox


class FirefoxPage:
    """The page of a `Firefox`, driven from asyncio (each call runs in a worker thread, one at a time)."""

    def __init__(self, firefox: Firefox, name: str, origin: str) -> None:
        self.firefox = firefox
        self.name = name
        self.origin = origin
        """scheme://host:port of the page: its errors are the ones of scripts there."""
        self._output_from = 0
        self._logged_from = 0
        self._lock = asyncio.Lock()

    async def errors(self, *, take: bool = False) -> list[str]:
        """What the page logged with `console.error` since it loaded, and the uncaught errors of scripts at its
        origin; `take=True`: the ones reported now are forgotten (they no longer fail the test)."""
        end = len(self.firefox.output)
        uncaught = self.firefox.uncaught_errors(self.origin, self._output_from)
        logged = await self.evaluate("(start) => (window.__firefoxConsoleErrors ?? []).slice(start)", self._logged_from)
        if take:
            self._output_from = end
            self._logged_from += len(logged)
        return [f"console.error: {text}" for text in logged] + uncaught

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def goto(self, url: str) -> None:
        """Load `url`, wait for its load event, and from then on keep what the page logs with `console.error`."""
        await self._run(self.firefox.marionette.navigate, url)
        await self.evaluate(RECORD_CONSOLE_ERRORS)

    async def click(self, selector: str) -> None:
        """A trusted click (a user gesture) on the element `selector` finds."""

        def click() -> None:
            self.firefox.marionette.find_element(By.CSS_SELECTOR, selector).click()

        await self._run(click)

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        """Call the JavaScript function `expression` (sync or async) with `arg` in the page, or evaluate `expression`
        when it is no function (as Playwright's `page.evaluate` does); the JSON result."""
        script = f"""
            const [arg, done] = arguments;
            (async () => {{ const f = ({expression}); return typeof f === "function" ? f(arg) : f; }})().then(
              (value) => done({{ value: value === undefined ? null : value }}),
              (err) => done({{ error: String(err && err.stack ? `${{err}}\\n${{err.stack}}` : err) }}),
            );
        """

        def run() -> Any:
            return self.firefox.marionette.execute_async_script(
                script, script_args=[arg], sandbox=None, new_sandbox=False, script_timeout=30_000
            )

        result = await self._run(run)
        if result.get("error") is not None:
            raise AssertionError(f"JavaScript error in {self.name}'s page: {result['error']}")
        return result["value"]

    async def text(self, selector: str) -> str | None:
        """The text of the element `selector` finds (None when there is none)."""
        return await self.evaluate("(s) => document.querySelector(s)?.textContent ?? null", selector)

    async def visible(self, selector: str) -> bool:
        """Whether the element `selector` finds is rendered (not hidden, has a box)."""
        return bool(
            await self.evaluate(
                "(s) => { const e = document.querySelector(s); return Boolean(e && e.getClientRects().length); }",
                selector,
            )
        )

    async def screenshot(self, path: Path) -> None:
        """A PNG of the page's viewport at `path`."""

        def shoot() -> None:
            path.write_bytes(self.firefox.marionette.screenshot(format="binary"))

        await self._run(shoot)
