"""The JSON Schema of the protocol: kept in the repo, equal to the code, and true to the docs' examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import pytest

from peercall.protocol import messages
from peercall.protocol.schema import check_client_frame, check_server_frame, schema

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_matches_the_code() -> None:
    """docs/protocol.schema.json is what the code generates (`python -m peercall.protocol.schema` rewrites it)."""
    committed = json.loads((ROOT / "docs/protocol.schema.json").read_text())
    assert committed == json.loads(json.dumps(schema()))


def doc_examples() -> list[str]:
    text = (ROOT / "docs/protocol.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("line", doc_examples())
def test_every_example_in_the_docs_is_a_valid_frame(line: str) -> None:
    """Each JSON example in docs/protocol.md is a valid client or server frame under the schema."""
    if '"from"' in line or json.loads(line)["type"] not in (*messages.CLIENT_TYPES, "auth"):
        check_server_frame(line)
    else:
        check_client_frame(line)


def test_schema_refuses_what_the_server_refuses() -> None:
    """A few frames the server rejects are rejected by the schema too."""
    for bad in ('{"type":"offer","to":"bob","data":"v=0"}', '{"type":"hangup","to":"bad id"}', '{"type":"ring"}'):
        with pytest.raises(msgspec.ValidationError):
            check_client_frame(bad)
