"""The web client's shape stays as docs describe it (STYLE.md "JS client"): checked on the source, no browser."""

from __future__ import annotations

import re

from tests.conftest import ROOT

JS = ROOT / "src" / "peercall" / "server" / "static" / "js"

PHASES = ("requesting", "incoming", "calling", "connected", "ended")


def test_main_js_is_wiring_only() -> None:
    """main.js declares no module-level mutable state: no top-level `let` or `var`, only the modules it wires."""
    top_level = [line for line in (JS / "main.js").read_text().splitlines() if re.match(r"(let|var)\s", line)]
    assert top_level == [], f"main.js keeps state of its own: {top_level}"


def test_call_phases_are_compared_through_the_constants() -> None:
    """No module compares a call's phase with a string literal: they use `CallPhase` (glossary: call phase)."""
    pattern = re.compile(r"\.(phase|previous)\s*[!=]==\s*\"(" + "|".join(PHASES) + ')"')
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(JS.glob("*.js"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == [], "\n".join(found)


def test_device_means_this_tab_not_a_microphone() -> None:
    """No JS name calls a microphone or speaker a "device" (glossary: they are media devices)."""
    pattern = re.compile(r"\b(listDevices|DeviceChoice|refreshDevices|renderDevices|DevicesView)\b")
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(JS.glob("*.js"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == [], "\n".join(found)
