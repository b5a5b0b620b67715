"""Settings sections both services declare the same way (`auth`, `logging`): one model each,
so a key means the same thing, with the same values, in the Gateway and in DataStorage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import field_validator

from signalgate.common.config import Section


class AuthSettings(Section):
    """`auth.*`: how callers prove who they are (see `common/auth.py`)."""

    mode: Literal["static", "none", "kubernetes"] = "static"
    tokens_file: Path | None = None


class LoggingSettings(Section):
    """`logging.*`: the level (any case: `INFO` as well as `info`) and the line format."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
