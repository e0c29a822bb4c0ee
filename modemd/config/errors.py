"""ConfigError and the few text helpers every error line is built with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: values longer than this are cut in error text (a 10 kB string must not flood the journal)
SHOW_MAX = 64


class ConfigError(ValueError):
    """One or more configuration problems; ``errors`` holds one line per problem."""

    def __init__(self, errors: str | list[str]) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def show(value: Any) -> str:
    """A value as the user wrote it, cut to SHOW_MAX characters."""
    text = repr(value)
    if len(text) > SHOW_MAX:
        text = text[:SHOW_MAX] + "..."
    return text


def typename(value: Any) -> str:
    """The TOML name of a value's type (the user wrote TOML, not Python)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__  # dates and times


def got(value: Any, secret: bool = False) -> str:
    """``got string 'x'``; a secret shows its type only."""
    return f"got {typename(value)}" if secret else f"got {typename(value)} {show(value)}"


def fmt_num(x: float) -> str:
    """3600.0 reads as 3600."""
    return repr(int(x)) if isinstance(x, float) and x.is_integer() else repr(x)


def range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"must be between {fmt_num(lo)} and {fmt_num(hi)}"
    if lo is not None:
        return f"must be at least {fmt_num(lo)}"
    return f"must be at most {fmt_num(hi)}"  # type: ignore[arg-type]


def suggest(key: str, known: Iterable[str]) -> str:
    """``; did you mean 'listen'?`` for a near miss, else nothing. difflib is imported here, on
    this error path only: a daemon whose config is fine never loads it (~0.15 MB of RSS)."""
    import difflib

    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def with_key(key: str, message: str) -> str:
    """One error line: messages that already start with their key path keep it."""
    return message if message.startswith(f"{key}: ") else f"{key}: {message}"
