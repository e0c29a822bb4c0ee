"""AT-injection guards for every user-supplied string that reaches an AT command line.

A Quectel command such as ``AT+QIOPEN=1,0,"TCP","<host>",443,0,1`` or
``AT+QICSGP=1,1,"<apn>","<user>","<password>",3`` carries user strings inside double quotes.
A string that contains ``"`` would end the parameter early; CR or LF would end the command line
and let the rest run as a new command (``evil"\\r\\nAT+QPOWD=1\\r\\n`` powers the module off).
Every such string therefore goes through one of the checks below first, both when the
configuration is loaded (:mod:`modemd.config`) and at run time (the SOCKS5 parser's host names).

Rules common to every check (:func:`check_at_text`):

* the value must be ``str``, or ``bytes`` that decode as ASCII (the SOCKS5 parser's domain names);
* printable ASCII only: bytes 0x20..0x7e.  Control bytes (< 0x20, which includes CR, LF, TAB,
  NUL and Ctrl-Z, the SMS/data terminator) and DEL (0x7f) are rejected, and so is anything
  non-ASCII: the modules' AT parsers work on bytes in the IRA/GSM character sets;
* no double quote ``"`` (ends the string parameter) and no backslash ``\\``: 3GPP TS 27.007
  allows ``\\HH`` escapes inside string parameters and some firmware honours them, so a backslash
  could smuggle a quote or a CR past this check;
* a maximum length in bytes (== characters, as only ASCII passes).

Specific rules and limits:

* :func:`check_hostname`: an IPv4 literal (dotted quad, no leading zeros), an IPv6 literal
  (without brackets and without a ``%zone``), or an RFC 1123 host name: labels of letters,
  digits and hyphens, 1..63 bytes each, not starting or ending with a hyphen; at most 253
  bytes without the optional single trailing dot (254 with it).  That is stricter than the
  modules' 256-byte domain-name limit (:data:`MODULE_DOMAIN_MAX`), so both hold.  A name whose
  last label is all digits is refused (RFC 1123 §2.1 / RFC 3696 §2: it would be read as an IPv4
  address), which also catches malformed addresses such as ``1.2.3`` or ``256.1.1.1``.
  Underscores are refused: they are not valid in host names.
* :func:`check_apn`: at most :data:`APN_MAX` = 100 bytes, the limit of 3GPP TS 23.003 §9.1 for
  the APN network identifier; dot-separated labels of letters, digits, hyphens and underscores
  (3GPP allows only letters, digits and hyphens; underscores are tolerated because some private
  APNs use them), no empty label.  The empty string is allowed: it asks the network for the
  subscription's default APN.
* :func:`check_credential`: PDP user names and passwords, at most :data:`CREDENTIAL_MAX` = 127
  bytes, any printable ASCII except ``"`` and ``\\`` (spaces are allowed); empty is allowed.
  Error messages never echo the value, its length or where the offending character is; they
  name only the kind of problem ("contains a control character").
* :func:`check_pin`: a SIM PIN for ``AT+CPIN``, 4 to 8 ASCII digits (3GPP TS 31.101 §9.4.1
  allows 4..8); the message never reveals the value or its length.

All checks raise :class:`ValueError` whose message starts with ``"<what>: "``, so a caller that
passes a configuration key path as ``what`` gets a ready-made error line.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "APN_MAX",
    "CREDENTIAL_MAX",
    "HOSTNAME_MAX",
    "LABEL_MAX",
    "MODULE_DOMAIN_MAX",
    "PIN_LENGTHS",
    "check_apn",
    "check_at_text",
    "check_credential",
    "check_hostname",
    "check_pin",
    "is_at_safe",
]

#: the modules' own limit on a domain name in QIOPEN / QIDNSGIP / QPING (TCP/IP manuals)
MODULE_DOMAIN_MAX = 256
#: RFC 1123 / RFC 1035: a host name is at most 253 bytes in text form (without a trailing dot)
HOSTNAME_MAX = 253
#: RFC 1035: one label is at most 63 bytes
LABEL_MAX = 63
#: 3GPP TS 23.003 §9.1: the APN network identifier is at most 100 octets
APN_MAX = 100
#: PDP user name / password limit of the modules' AT+QICSGP
CREDENTIAL_MAX = 127
#: 3GPP TS 31.101 §9.4.1: a PIN is 4 to 8 digits
PIN_LENGTHS = (4, 8)

_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_APN_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}\Z")
_SHOW_MAX = 64


def _show(s: str) -> str:
    """repr() of a non-secret value, cut short so an error line stays one readable line."""
    if len(s) > _SHOW_MAX:
        return repr(s[:_SHOW_MAX]) + f"... ({len(s)} characters)"
    return repr(s)


def _describe(ch: str) -> str:
    o = ord(ch)
    if ch == '"':
        return 'a double quote (")'
    if ch == "\\":
        return "a backslash (\\)"
    if o < 0x20 or o == 0x7F:
        return f"a control character (0x{o:02x})"
    return f"a non-ASCII character (U+{o:04X})"


def _bad_char(s: str) -> int:
    """Index of the first character not allowed in an AT string parameter, or -1."""
    for i, ch in enumerate(s):
        o = ord(ch)
        if o < 0x20 or o > 0x7E or ch == '"' or ch == "\\":
            return i
    return -1


def is_at_safe(s: str) -> bool:
    """True if ``s`` is printable ASCII without ``"`` and ``\\`` (no length limit applied)."""
    return isinstance(s, str) and _bad_char(s) < 0


def check_at_text(s: str | bytes, what: str, max_bytes: int, *, secret: bool = False) -> str:
    """The common guard: printable ASCII without ``"``/``\\``, at most ``max_bytes``.

    Returns the value as ``str``.  With ``secret=True`` the message names only the kind of
    problem, never the value, its length or the offending character's position.
    """
    if isinstance(s, (bytes, bytearray, memoryview)):
        raw = bytes(s)
        try:
            s = raw.decode("ascii")
        except UnicodeDecodeError as exc:
            if secret:
                raise ValueError(f"{what}: contains a non-ASCII byte") from None
            raise ValueError(
                f"{what}: {raw[:_SHOW_MAX]!r} contains a non-ASCII byte at offset {exc.start}"
            ) from None
    if not isinstance(s, str):
        raise TypeError(f"{what}: must be a string, got {type(s).__name__}")
    i = _bad_char(s)
    if i >= 0:
        if secret:
            kind = _describe(s[i]).split(" (")[0]
            raise ValueError(
                f"{what}: contains {kind}, which cannot be sent in an AT command "
                '(only printable ASCII without " and \\ is allowed)'
            )
        raise ValueError(
            f"{what}: {_show(s)} contains {_describe(s[i])} at offset {i}, which cannot be sent in "
            'an AT command (only printable ASCII without " and \\ is allowed)'
        )
    if len(s) > max_bytes:
        if secret:
            raise ValueError(f"{what}: is longer than the limit of {max_bytes} bytes")
        raise ValueError(f"{what}: {_show(s)} is {len(s)} bytes long; the limit is {max_bytes}")
    return s


def check_hostname(s: str | bytes, what: str = "host name") -> str:
    """Validate a remote host: IPv4 literal, IPv6 literal (no brackets) or RFC 1123 name.

    Returns the host as ``str``: names unchanged, IPv6 literals in compressed form.
    """
    s = check_at_text(s, what, MODULE_DOMAIN_MAX)
    if not s:
        raise ValueError(f"{what}: must not be empty")
    if ":" in s or s.startswith("["):
        if s.startswith("[") or s.endswith("]"):
            raise ValueError(f"{what}: {_show(s)}: write an IPv6 address without brackets here")
        if "%" in s:
            raise ValueError(f"{what}: {_show(s)}: IPv6 zone indexes (%...) are not supported")
        try:
            return str(ipaddress.IPv6Address(s))
        except ValueError:
            raise ValueError(f"{what}: {_show(s)} is not a valid IPv6 address") from None
    name = s[:-1] if s.endswith(".") else s
    if not name:
        raise ValueError(f"{what}: {_show(s)} is not a valid host name")
    labels = name.split(".")
    if labels[-1].isdigit() or all(label.isdigit() for label in labels if label):
        try:
            ipaddress.IPv4Address(s)
        except ValueError:
            raise ValueError(
                f"{what}: {_show(s)} is not a valid IPv4 address (four decimal numbers 0..255 "
                "without leading zeros) nor a host name (its last label must not be all digits)"
            ) from None
        return s
    if len(name) > HOSTNAME_MAX:
        raise ValueError(
            f"{what}: {_show(s)} is {len(name)} bytes long; a host name is at most "
            f"{HOSTNAME_MAX} bytes"
        )
    for label in labels:
        if not label:
            raise ValueError(f"{what}: {_show(s)} has an empty label (two dots in a row?)")
        if len(label) > LABEL_MAX:
            raise ValueError(
                f"{what}: {_show(s)} has a label of {len(label)} bytes; at most {LABEL_MAX}"
            )
        if not _HOST_LABEL.match(label):
            raise ValueError(
                f"{what}: {_show(s)} is not a valid host name: label {_show(label)} must be "
                "letters, digits and hyphens, not starting or ending with a hyphen"
            )
    return s


def check_apn(s: str | bytes, what: str = "APN") -> str:
    """Validate an access point name (empty = the network's default APN)."""
    s = check_at_text(s, what, APN_MAX)
    if not s:
        return s
    for label in s.split("."):
        if not label:
            raise ValueError(
                f"{what}: {_show(s)} has an empty label (leading, trailing or double dot)"
            )
        if not _APN_LABEL.match(label):
            raise ValueError(
                f"{what}: {_show(s)} is not a valid APN: labels are letters, digits, '-' and '_', "
                f"at most {LABEL_MAX} each"
            )
    return s


def check_credential(s: str | bytes, what: str = "credential") -> str:
    """Validate a PDP user name or password; the message never reveals the value."""
    return check_at_text(s, what, CREDENTIAL_MAX, secret=True)


def check_pin(s: str | bytes, what: str = "PIN") -> str:
    """Validate a SIM PIN: 4 to 8 ASCII digits; the message never reveals the value."""
    if isinstance(s, bytes):
        s = s.decode("ascii", "replace")
    lo, hi = PIN_LENGTHS
    if not (lo <= len(s) <= hi and s.isascii() and s.isdigit()):
        raise ValueError(f"{what}: must be {lo} to {hi} digits (0-9)")
    return s
