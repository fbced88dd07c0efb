"""The web app's routes beside its static files (server/webapp.py): the service worker's build, the embed
origins setting. No server, no event loop."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from peercall.config import Settings
from peercall.server.app import STATIC_DIR
from peercall.server.webapp import service_worker, shell_paths


def build_of(worker: bytes) -> dict[str, object]:
    """The `BUILD` object the server filled into sw.js."""
    found = re.search(r"^const BUILD = (\{.*\}); //", worker.decode(), re.MULTILINE)
    assert found, "no BUILD line in the served worker"
    build: dict[str, object] = json.loads(found.group(1))
    return build


def test_the_worker_keeps_the_app_shell_and_nothing_else() -> None:
    """The shell is the page, its stylesheet, every module, the icons and the manifest; never an API or the
    worker's own import (js/sw-push.js, which the browser keeps with the worker)."""
    build = build_of(service_worker(STATIC_DIR, "1.2.3"))
    shell = build["shell"]
    assert isinstance(shell, list) and shell[0] == "./"
    assert {"css/peercall.css", "js/main.js", "js/offline.js", "js/calllink.js", "manifest.webmanifest"} <= set(shell)
    assert "icons/icon-192.png" in shell and "icons/maskable-512.png" in shell
    assert "js/sw-push.js" not in shell and "sw.js" not in shell
    assert all(not path.startswith(("/", "api", "ws", "ice-servers", "healthz")) for path in shell)
    assert len(shell) == len(shell_paths(STATIC_DIR))


def test_a_changed_shell_file_or_version_makes_a_new_worker(tmp_path: Path) -> None:
    """The build (the cache's name) follows the server's version and every shell file's bytes, so an update
    makes a new worker, whose activation replaces the cache; the same files give the very same worker."""
    static = tmp_path / "static"
    shutil.copytree(STATIC_DIR, static)
    first = build_of(service_worker(static, "1.2.3"))["version"]
    assert isinstance(first, str) and first.startswith("1.2.3-")
    assert service_worker(static, "1.2.3") == service_worker(static, "1.2.3")
    assert build_of(service_worker(static, "1.2.4"))["version"] != first
    (static / "js" / "main.js").write_text((static / "js" / "main.js").read_text() + "\n// changed\n")
    assert build_of(service_worker(static, "1.2.3"))["version"] != first
    (static / "index.html").write_text((static / "index.html").read_text() + "\n")
    assert build_of(service_worker(static, "1.2.3"))["version"] != first


def test_a_worker_without_its_build_line_fails_at_startup(tmp_path: Path) -> None:
    """If sw.js loses the line the server fills in, the server refuses to start (and this test fails) rather than
    serving a worker that caches nothing."""
    static = tmp_path / "static"
    shutil.copytree(STATIC_DIR, static)
    (static / "sw.js").write_text("importScripts('js/sw-push.js');\n")
    with pytest.raises(RuntimeError, match="BUILD line"):
        service_worker(static, "1.2.3")


def test_embed_origins_take_commas_or_spaces_and_come_out_normalised() -> None:
    """PEERCALL_EMBED_ORIGINS: origins separated by commas and/or spaces, lower-cased, without a trailing slash."""
    settings = Settings(embed_origins="https://www.Example.org, http://127.0.0.1:8000  HTTPS://b.example/")
    assert settings.embed_origins == ["https://www.example.org", "http://127.0.0.1:8000", "https://b.example"]
    assert Settings().embed_origins == []


@pytest.mark.parametrize(
    "bad",
    [
        "www.example.org",  # no scheme
        "ftp://example.org",
        "https://example.org/page",  # a path: frame-ancestors takes origins here
        "https://example.org?x=1",
        "https://user@example.org",
        "*",  # any site: not offered
        "https://example.org;script-src",  # would write another CSP directive
        "https://example.org'",
        "https://example.org:99999",
    ],
)
def test_a_bad_embed_origin_is_refused_with_the_expected_form(bad: str) -> None:
    """Anything but scheme://host[:port] (http or https) stops the server at start, naming the expected form."""
    with pytest.raises(ValidationError, match=r"is not a web origin \(scheme://host\[:port\]"):
        Settings(embed_origins=bad)
