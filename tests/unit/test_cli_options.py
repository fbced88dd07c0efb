"""The `peercall` command line, as parsed (no command is run)."""

from __future__ import annotations

from typing import Any

import pytest

from peercall.cli import _parser


def test_options_are_taken_only_as_spelled_out(capsys: Any) -> None:
    """`--password` (a password on the command line, which `ps` shows) is refused, not taken as `--password-file`;
    no option of any command is taken from a prefix of its name."""
    parser = _parser()
    for argv in (
        ["call", "--password", "hunter22", "bob"],
        ["answer", "--token-f", "/tmp/token"],
        ["serve", "--po", "1"],
        ["invite", "--ad"],
    ):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(argv)
        assert exited.value.code == 2
        assert "unrecognized arguments: " + argv[1] in capsys.readouterr().err
    spelled = parser.parse_args(["call", "--password-file", "/tmp/pw", "bob"])
    assert spelled.password_file == "/tmp/pw"
