"""The wire protocol (docs/protocol.md): message shapes, validation and error codes. No I/O here."""
