"""Logging set-up: the journal, ``<N>``-prefixed stderr under systemd, plain lines on a terminal.

Structured fields are passed as upper-case ``extra`` keys::

    log.info("socket opened", extra={"CONNECT_ID": 3, "FORWARD": "ssh"})

* journal (systemd-python importable and running under journald): they become journal fields
  (``journalctl CONNECT_ID=3``), and ``SYSLOG_IDENTIFIER=modemd``;
* stderr: they are appended as ``connect_id=3 forward=ssh``.

systemd-python is optional (it does not build without libsystemd-dev). Without it, stderr lines
under systemd carry a ``<N>`` syslog-priority prefix that journald turns into the entry's priority.

Secrets (APN passwords, ...) registered with :func:`register_secret`, and the arguments of every
``+CPIN=`` (a SIM PIN or PUK), are replaced by ``***`` in the message, its arguments, the
traceback, the stack and the structured fields of every record that reaches a handler installed
by :func:`setup_logging`, and again in the formatted text, so they never reach any log output.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import Any, TextIO

__all__ = [
    "JOURNAL_SOCKET",
    "RedactFilter",
    "StderrFormatter",
    "clear_secrets",
    "journal_available",
    "redact",
    "register_secret",
    "setup_logging",
    "stderr_is_journal",
    "structured_fields",
    "syslog_priority",
]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "modemd"
SECRET_MIN_LEN = 4  # shorter strings ("1", "abc") would shred ordinary text
MASK = "***"

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# --------------------------------------------------------------------------- secrets

_secrets: set[str] = set()
_ordered: tuple[str, ...] = ()
_lock = threading.Lock()


def register_secret(secret: str | None) -> None:
    """Never log ``secret``. Empty strings and strings shorter than 4 characters are ignored."""
    global _ordered
    if not secret or not isinstance(secret, str) or len(secret) < SECRET_MIN_LEN:
        return
    with _lock:
        _secrets.add(secret)
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))  # longest first


def clear_secrets() -> None:
    global _ordered
    with _lock:
        _secrets.clear()
        _ordered = ()


#: the arguments of +CPIN= (a PIN; a PUK and a new PIN), masked wherever they appear and whoever
#: wrote them. A PIN is masked by place, not registered as a secret: its four digits would mask
#: them in every number of a log line that holds them (a port, a byte count).
_CPIN_ARGS = re.compile(r"(\+CPIN=)[^\r\n]*", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every registered secret, and every +CPIN= argument, replaced by ``***``."""
    for secret in _ordered:
        if secret in text:
            text = text.replace(secret, MASK)
    return _CPIN_ARGS.sub(r"\1" + MASK, text)


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value if isinstance(value, str) else str(value)
    cleaned = redact(text)
    return value if cleaned == text and not isinstance(value, str) else cleaned


# --------------------------------------------------------------------------- records


def syslog_priority(levelno: int) -> int:
    """debug 7, info 6, warning 4, error 3, critical 2 (levels in between round up)."""
    if levelno <= logging.DEBUG:
        return 7
    if levelno <= logging.INFO:
        return 6
    if levelno <= logging.WARNING:
        return 4
    if levelno <= logging.ERROR:
        return 3
    return 2


def structured_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The upper-case ``extra`` keys of ``record`` (``MODEM_STATE``, ``CONNECT_ID``, ...)."""
    return {
        k: v for k, v in record.__dict__.items() if k.isupper() and k[0].isalpha() and v is not None
    }


class RedactFilter(logging.Filter):
    """Bake the message (``msg % args``) and strip registered secrets from the record.

    Runs as a handler filter, before any formatter or journal sender sees the record: the
    arguments (systemd-python's JournalHandler would send them as ``CODE_ARGS``), the exception
    (``EXCEPTION_INFO``), the stack and the structured fields are all cleaned. Never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_modemd_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts, never lose the record
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # the text (already redacted) is what gets shown
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in structured_fields(record).items():
            setattr(record, key, _redact_value(value))
        record._modemd_redacted = True
        return True


def _quote(value: Any) -> str:
    text = str(value)
    if text == "" or any(c.isspace() or c in '"=\\' for c in text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class StderrFormatter(logging.Formatter):
    """``<6>name: message key=value`` (``prefix``), else ``LEVEL name: message key=value``.

    ``prefix``: each line (tracebacks too) starts with the syslog priority, for journald's stream
    parser. ``fields``: append structured fields as lower-case ``key=value``. ``timestamps``:
    lead with the time (for plain files; journald and terminals do not need it). The final text is
    passed through :func:`redact`.
    """

    def __init__(
        self, *, prefix: bool = False, fields: bool = True, timestamps: bool = False
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.fields = fields
        self.timestamps = timestamps

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if self.fields:
            extra = structured_fields(record)
            if extra:
                message += " " + " ".join(f"{k.lower()}={_quote(v)}" for k, v in extra.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message += "\n" + record.exc_text
        if record.stack_info:
            message += "\n" + self.formatStack(record.stack_info)
        if self.prefix:
            head = f"{record.name}: "
        else:
            head = f"{record.levelname} {record.name}: "
            if self.timestamps:
                head = f"{self.formatTime(record)} {head}"
        text = redact(head + message)
        if self.prefix:
            pri = f"<{syslog_priority(record.levelno)}>"
            text = "\n".join(pri + line for line in text.split("\n"))
        return text


class _MessageFormatter(logging.Formatter):
    """For the journal: the message (and traceback) only; fields travel as journal fields."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


# --------------------------------------------------------------------------- detection


def stderr_is_journal(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default ``sys.stderr``) is connected to journald.

    ``JOURNAL_STREAM`` (``dev:inode``, set by systemd for ``StandardError=journal``) must match the
    stream's file; a stream without a file descriptor trusts the variable alone.
    """
    value = os.environ.get("JOURNAL_STREAM")
    if not value:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return True
    return value == f"{st.st_dev}:{st.st_ino}"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _journal_handler_class() -> type[logging.Handler] | None:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    return JournalHandler


def journal_available(stream: TextIO | None = None) -> bool:
    """systemd-python is importable and we run under journald.

    Under journald means: stderr is the journal (``JOURNAL_STREAM``), or journald's socket exists
    and stderr is not a terminal (someone running modemd by hand wants to read its output).
    """
    if _journal_handler_class() is None:
        return False
    stream = sys.stderr if stream is None else stream
    if stderr_is_journal(stream):
        return True
    return os.path.exists(JOURNAL_SOCKET) and not _isatty(stream)


# --------------------------------------------------------------------------- set-up


def _parse_level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    try:
        return LEVELS[str(level).strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {level!r}: use one of debug, info, warning, error, critical"
        ) from None


def setup_logging(
    level: str | int = "info",
    journal: bool | None = None,
    *,
    stream: TextIO | None = None,
    syslog_prefix: bool | None = None,
    timestamps: bool | None = None,
) -> logging.Handler:
    """Install one handler on the root logger and return it (calling again replaces it).

    ``journal``: None = use systemd-python's JournalHandler when :func:`journal_available`;
    True = use it if importable (else stderr, with a warning); False = never.
    On the stderr path, ``syslog_prefix`` (None = when :func:`stderr_is_journal`) selects
    ``<N>name: message``; otherwise ``LEVEL name: message``, with a timestamp when ``timestamps``
    (None = when stderr is neither a terminal nor the journal).
    """
    levelno = _parse_level(level)
    stream = sys.stderr if stream is None else stream
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_modemd", False)]:
        root.removeHandler(old)
        old.close()

    handler: logging.Handler | None = None
    journal_missing = False
    if journal is not False:
        cls = _journal_handler_class()
        if cls is not None and (journal is True or journal_available(stream)):
            handler = cls(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
            handler.setFormatter(_MessageFormatter())
        elif journal is True:
            journal_missing = True
    if handler is None:
        to_journal = stderr_is_journal(stream)
        prefix = to_journal if syslog_prefix is None else syslog_prefix
        if timestamps is None:
            timestamps = not prefix and not to_journal and not _isatty(stream)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(StderrFormatter(prefix=prefix, timestamps=timestamps))
    handler.addFilter(RedactFilter())
    handler._modemd = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(levelno)
    if journal_missing:
        logging.getLogger(__name__).warning(
            "journal logging requested but systemd-python is not installed; logging to stderr"
        )
    return handler
