"""AT-injection guards: modemd.validate."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from modemd.validate import (
    APN_MAX,
    CREDENTIAL_MAX,
    MODULE_DOMAIN_MAX,
    check_apn,
    check_at_text,
    check_credential,
    check_hostname,
    is_at_safe,
)

INJECTIONS = [
    'evil"\r\nAT+QPOWD=1\r\n',
    'evil",443,0,1\r\nAT+QPOWD=1\r\n',
    "evil\r\nAT+QPOWD=1",
    "evil\nAT+QPOWD=1",
    "evil\rAT+QPOWD=1",
    'a"b',
    "a\\22b",
    "a\x1ab",  # Ctrl-Z ends a data/SMS prompt
    "a\x1bb",  # ESC cancels a prompt
    "a\x00b",
    "a\x7fb",
    "a\tb",
    "caf\u00e9",
    "\u0430pple.com",  # Cyrillic a
]

CHECKS = [
    pytest.param(check_hostname, id="hostname"),
    pytest.param(check_apn, id="apn"),
    pytest.param(lambda s: check_credential(s, "pdp.password"), id="credential"),
]


def _assert_at_safe(value: str, limit: int) -> None:
    assert isinstance(value, str)
    assert len(value.encode("ascii")) <= limit
    for ch in value:
        assert 0x20 <= ord(ch) <= 0x7E, repr(ch)
        assert ch not in '"\\\r\n'


# ------------------------------------------------------------------------------ properties


@given(st.text())
@example('evil"\r\nAT+QPOWD=1\r\n')
def test_accepted_hostnames_are_at_safe(s: str) -> None:
    try:
        out = check_hostname(s)
    except ValueError:
        return
    _assert_at_safe(out, MODULE_DOMAIN_MAX)


@given(st.text())
def test_accepted_apns_are_at_safe(s: str) -> None:
    try:
        out = check_apn(s)
    except ValueError:
        return
    _assert_at_safe(out, APN_MAX)


@given(st.text())
def test_accepted_credentials_are_at_safe(s: str) -> None:
    try:
        out = check_credential(s, "pdp.password")
    except ValueError:
        return
    _assert_at_safe(out, CREDENTIAL_MAX)


@given(st.binary())
def test_accepted_bytes_hostnames_are_at_safe(raw: bytes) -> None:
    """The SOCKS5 parser hands over the raw domain-name bytes."""
    try:
        out = check_hostname(raw)
    except ValueError:
        return
    _assert_at_safe(out, MODULE_DOMAIN_MAX)


_forbidden = st.sampled_from(
    ['"', "\\", "\r", "\n", "\x00", "\x1a", "\x7f", "\u00e9"]
) | st.characters(max_codepoint=0x1F)
_safe_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@pytest.mark.parametrize("check", CHECKS)
@given(prefix=_safe_text, bad=_forbidden, suffix=_safe_text)
def test_any_forbidden_character_is_rejected(check, prefix: str, bad: str, suffix: str) -> None:
    with pytest.raises(ValueError):
        check(prefix + bad + suffix)


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("value", INJECTIONS)
def test_injection_samples_are_rejected(check, value: str) -> None:
    with pytest.raises(ValueError):
        check(value)


_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", fullmatch=True)


@given(
    labels=st.lists(_label, min_size=1, max_size=5),
    tld=st.from_regex(r"[a-z]{2,6}", fullmatch=True),
)
def test_valid_host_names_are_accepted_unchanged(labels: list[str], tld: str) -> None:
    name = ".".join([*labels, tld])
    assert check_hostname(name) == name


@given(
    secret=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=6, max_size=30),
    bad=_forbidden,
)
def test_credential_errors_never_echo_the_value(secret: str, bad: str) -> None:
    value = "Zq" + secret + bad + secret
    with pytest.raises(ValueError) as info:
        check_credential(value, "pdp.password")
    msg = str(info.value)
    assert msg.startswith("pdp.password: ")
    assert "Zq" + secret not in msg
    assert repr(value) not in msg


# ------------------------------------------------------------------------------- host names


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("broker.example.com", "broker.example.com"),
        ("Broker.Example.COM", "Broker.Example.COM"),
        ("localhost", "localhost"),
        ("example.com.", "example.com."),
        ("a-b.c-d.e", "a-b.c-d.e"),
        ("1.2.3.4", "1.2.3.4"),
        ("255.255.255.255", "255.255.255.255"),
        ("123.example.com", "123.example.com"),
        ("0x1.example", "0x1.example"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("a" * 63 + ".com", "a" * 63 + ".com"),
    ],
)
def test_hostname_accepted(value: str, expected: str) -> None:
    assert check_hostname(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "empty"),
        (".", "not a valid host name"),
        ("a..b", "empty label"),
        (".example.com", "empty label"),
        ("-a.example", "hyphen"),
        ("a-.example", "hyphen"),
        ("under_score.example", "letters, digits and hyphens"),
        ("sp ace.example", "letters, digits and hyphens"),
        ("a" * 64 + ".com", "at most 63"),
        ("256.1.1.1", "not a valid IPv4"),
        ("1.2.3", "not a valid IPv4"),
        ("01.2.3.4", "not a valid IPv4"),
        ("1.2.3.4.", "not a valid IPv4"),
        ("host.123", "last label"),
        ("[2001:db8::1]", "without brackets"),
        ("fe80::1%eth0", "zone"),
        ("2001:db8::g", "not a valid IPv6"),
        ("1:2:3:4:5:6:7:8:9", "not a valid IPv6"),
        ('evil"\r\nAT+QPOWD=1\r\n', "double quote"),
    ],
)
def test_hostname_rejected(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="^host name: ") as info:
        check_hostname(value)
    assert fragment in str(info.value)


def test_hostname_length_limits() -> None:
    label = "a" * 63
    name253 = ".".join([label, label, label, "a" * 61])
    assert len(name253) == 253
    assert check_hostname(name253) == name253
    assert check_hostname(name253 + ".") == name253 + "."  # trailing root dot allowed
    name254 = name253[:-1] + "ab"
    assert len(name254) == 254
    with pytest.raises(ValueError, match="at most 253"):
        check_hostname(name254)
    with pytest.raises(ValueError, match="limit is 256"):
        check_hostname("a." * 150)


def test_hostname_bytes_and_what() -> None:
    assert check_hostname(b"example.com") == "example.com"
    with pytest.raises(ValueError, match="^socks.request: .*non-ASCII byte"):
        check_hostname(b"ex\xffample.com", "socks.request")
    with pytest.raises(TypeError):
        check_hostname(42)  # type: ignore[arg-type]


def test_hostname_error_shows_control_characters_escaped() -> None:
    with pytest.raises(ValueError) as info:
        check_hostname("evil\r\nAT")
    msg = str(info.value)
    assert "\r" not in msg and "\n" not in msg
    assert "0x0d" in msg


# -------------------------------------------------------------------------------------- APN


@pytest.mark.parametrize(
    "value",
    ["", "internet", "m2m.com.attz", "iot.1nce.net", "TM", "my_private-apn.corp", "a" * 63],
)
def test_apn_accepted(value: str) -> None:
    assert check_apn(value) == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("inter net", "not a valid APN"),
        ("internet.", "empty label"),
        (".internet", "empty label"),
        ("a..b", "empty label"),
        ("a" * 64, "not a valid APN"),
        (".".join(["a" * 50, "b" * 50]), "limit is 100"),
        ("apn*", "not a valid APN"),
        ('apn"', "double quote"),
    ],
)
def test_apn_rejected(value: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="^APN: ") as info:
        check_apn(value)
    assert fragment in str(info.value)


def test_apn_limit_exact() -> None:
    value = ".".join(["a" * 49, "b" * 50])
    assert len(value) == 100
    assert check_apn(value) == value


# ------------------------------------------------------------------------------ credentials


@pytest.mark.parametrize("value", ["", "user", "p@ss w0rd!#$%&'()*+,-./:;<=>?[]^_`{|}~", "x" * 127])
def test_credential_accepted(value: str) -> None:
    assert check_credential(value, "pdp.password") == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("hunter2\r\n", "control character"),
        ('hun"ter2', "double quote"),
        ("hun\\ter2", "backslash"),
        ("hunter\u00e92", "non-ASCII"),
        ("h" * 128, "longer than the limit of 127"),
    ],
)
def test_credential_rejected_without_echo(value: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        check_credential(value, "pdp.username")
    msg = str(info.value)
    assert msg.startswith("pdp.username: ")
    assert fragment in msg
    assert "hunter" not in msg and "hhhh" not in msg and "128" not in msg


def test_credential_bytes_without_echo() -> None:
    with pytest.raises(ValueError) as info:
        check_credential(b"s3cr\xffet", "pdp.password")
    assert "s3cr" not in str(info.value)


# ---------------------------------------------------------------------------------- helpers


def test_check_at_text_and_is_at_safe() -> None:
    assert check_at_text("AT ok", "x", 5) == "AT ok"
    with pytest.raises(ValueError, match="limit is 4"):
        check_at_text("AT ok", "x", 4)
    assert is_at_safe("plain text")
    assert not is_at_safe('quote"')
    assert not is_at_safe("line\n")
    assert not is_at_safe(b"bytes")  # type: ignore[arg-type]
