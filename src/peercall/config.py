"""Settings: one frozen, typed object, read from PEERCALL_* environment variables and CLI options.

CLI options win over the environment, the environment over the defaults. Invalid values stop the server at
startup with a message naming the setting, never later.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_STUN = "stun:stun.l.google.com:19302"


class IceServer(BaseModel):
    """One RTCIceServer, in the browser's own shape (`urls`, `username`, `credential`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    urls: str | list[str]
    username: str | None = None
    credential: str | None = None

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Settings(BaseSettings):
    """Every setting of the server. Environment variable: PEERCALL_ + the upper-case name."""

    model_config = SettingsConfigDict(env_prefix="PEERCALL_", frozen=True, extra="forbid")

    host: str = "0.0.0.0"
    """Interface to listen on (`PEERCALL_HOST`)."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """TCP port (`PEERCALL_PORT`); 0 picks a free one and the banner says which."""
    ice_servers: list[IceServer] = Field(default_factory=lambda: [IceServer(urls=DEFAULT_STUN)])
    """What `/ice-servers` returns, as JSON (`PEERCALL_ICE_SERVERS='[{"urls":"stun:…"}]'`; `[]` for none)."""
    max_message_size: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    """Largest frame, in bytes, that is routed; larger ones get `too-large` (`PEERCALL_MAX_MESSAGE_SIZE`)."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Origins allowed to call the HTTP API from other sites, comma-separated (`PEERCALL_CORS_ORIGINS`); `*`
    allows any. Empty (the default): same-origin only."""
    ring_timeout: Annotated[float, Field(gt=0, le=600)] = 45.0
    """Seconds a call rings before it ends as missed (`PEERCALL_RING_TIMEOUT`)."""
    resume_grace: Annotated[float, Field(ge=0, le=600)] = 20.0
    """Seconds a call waits for a party whose connection dropped to come back (`PEERCALL_RESUME_GRACE`);
    the audio is peer-to-peer and usually keeps flowing meanwhile."""
    database_url: str = "sqlite:///peercall.sqlite3"
    """Call history store (`PEERCALL_DATABASE_URL`): `sqlite:///path` (default, relative to the working
    directory), `postgresql://user:password@host/db` for several nodes, or `memory://` (lost at exit)."""
    shutdown_timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    """Seconds that a graceful shutdown waits for connections to close (`PEERCALL_SHUTDOWN_TIMEOUT`)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """`debug` also logs every routed message (`PEERCALL_LOG_LEVEL`)."""
    access_log: bool = True
    """Log every HTTP request (`PEERCALL_ACCESS_LOG`)."""
    ws_per_message_deflate: bool = False
    """Compress WebSocket frames (`PEERCALL_WS_PER_MESSAGE_DEFLATE`): saves bandwidth on SDP, costs memory and
    CPU on every connection, so it is off by default."""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value
