"""Tests of modemd.logs: journal, <N>-prefixed stderr, terminal lines, fields and redaction."""

from __future__ import annotations

import io
import logging
import os
import sys
import types

import pytest

from modemd import logs


class TtyStream(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def clean(monkeypatch, tmp_path):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(tmp_path / "no-journal-socket"))
    # systemd-python absent unless a test fakes it
    monkeypatch.setitem(sys.modules, "systemd", None)
    monkeypatch.setitem(sys.modules, "systemd.journal", None)
    root = logging.getLogger()
    level = root.level
    logs.clear_secrets()
    yield
    for h in [h for h in root.handlers if getattr(h, "_modemd", False)]:
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    logs.clear_secrets()


@pytest.fixture
def fake_journal(monkeypatch):
    """A stand-in for systemd-python's systemd.journal, recording what JournalHandler sends."""
    sent: list[dict] = []

    class JournalHandler(logging.Handler):
        def __init__(self, level=logging.NOTSET, **kwargs):
            super().__init__(level)
            self.defaults = kwargs

        def emit(self, record):  # the shape of systemd-python 235's emit
            fields = dict(self.defaults)
            if record.exc_text:
                fields["EXCEPTION_TEXT"] = record.exc_text
            if record.exc_info:
                fields["EXCEPTION_INFO"] = record.exc_info
            if record.args:
                fields["CODE_ARGS"] = str(record.args)
            fields.update({k: v for k, v in record.__dict__.items() if k.isupper()})
            fields["MESSAGE"] = self.format(record)
            fields["PRIORITY"] = str(logs.syslog_priority(record.levelno))
            fields["LOGGER"] = record.name
            sent.append(fields)

    journal = types.ModuleType("systemd.journal")
    journal.JournalHandler = JournalHandler
    package = types.ModuleType("systemd")
    package.journal = journal
    monkeypatch.setitem(sys.modules, "systemd", package)
    monkeypatch.setitem(sys.modules, "systemd.journal", journal)
    return sent


def journal_stream_for(path, monkeypatch):
    stream = open(path, "w")  # noqa: SIM115
    st = os.fstat(stream.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    return stream


# --------------------------------------------------------------------------- priorities, redaction


@pytest.mark.parametrize(
    "level, pri",
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (5, 7),
        (25, 4),
        (35, 3),
        (45, 2),
    ],
)
def test_syslog_priority(level, pri):
    assert logs.syslog_priority(level) == pri


def test_redact():
    logs.register_secret("s3cr3t-pass")
    logs.register_secret("s3cr3t")  # a prefix of the first: longest replaced first
    logs.register_secret("")
    logs.register_secret(None)
    logs.register_secret("abc")  # too short, ignored
    assert logs.redact("pw=s3cr3t-pass, other s3cr3t, abc") == "pw=***, other ***, abc"
    logs.clear_secrets()
    assert logs.redact("s3cr3t") == "s3cr3t"


def test_a_sim_pin_is_masked_where_it_appears_not_in_every_number():
    """+CPIN= arguments (PIN; PUK and new PIN), whoever typed them and in any case, are masked;
    the same digits elsewhere (a port, a byte count) are left alone: the PIN is not a secret
    string, which would shred every number that holds it."""
    for line, masked in [
        ('AT+CPIN="1234"', "AT+CPIN=***"),
        ('unknown line: at+cpin="12345678","4711"', "unknown line: at+cpin=***"),
        ('modemctl at AT+CPIN="1234"\r\nOK', "modemctl at AT+CPIN=***\r\nOK"),
        ("forward web: 127.0.0.1:51234 -> localhost:1234, 123412 bytes",
         "forward web: 127.0.0.1:51234 -> localhost:1234, 123412 bytes"),
        ("+CPIN: SIM PIN", "+CPIN: SIM PIN"),  # the SIM's answer holds no code
    ]:
        assert logs.redact(line) == masked


# --------------------------------------------------------------------------- stderr paths


def test_terminal_plain_lines():
    stream = TtyStream()
    handler = logs.setup_logging("debug", journal=False, stream=stream)
    assert isinstance(handler, logging.StreamHandler)
    log = logging.getLogger("modemd.test")
    log.debug("hello %s", "world")
    log.warning("state change", extra={"MODEM_STATE": "registered", "CONNECT_ID": 3})
    log.info("forward", extra={"FORWARD": "ssh tunnel", "lower_case": "not a field"})
    assert stream.getvalue().splitlines() == [
        "DEBUG modemd.test: hello world",
        "WARNING modemd.test: state change modem_state=registered connect_id=3",
        'INFO modemd.test: forward forward="ssh tunnel"',
    ]


def test_level_filtering_and_bad_level():
    stream = TtyStream()
    logs.setup_logging("WARNING", journal=False, stream=stream)
    logging.getLogger("modemd.x").info("hidden")
    logging.getLogger("modemd.x").error("shown")
    assert stream.getvalue() == "ERROR modemd.x: shown\n"
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        logs.setup_logging("loud")


def test_setup_is_idempotent():
    stream = TtyStream()
    logs.setup_logging(journal=False, stream=stream)
    logs.setup_logging(journal=False, stream=stream)
    logging.getLogger("modemd.x").info("once")
    assert stream.getvalue() == "INFO modemd.x: once\n"
    assert sum(getattr(h, "_modemd", False) for h in logging.getLogger().handlers) == 1


def test_file_gets_timestamps(tmp_path):
    with open(tmp_path / "log", "w") as stream:
        logs.setup_logging(journal=False, stream=stream)
        logging.getLogger("modemd.x").info("to a file")
    line = (tmp_path / "log").read_text()
    assert line.endswith(" INFO modemd.x: to a file\n") and line[:2] == "20"


def test_journald_stream_gets_priority_prefix(tmp_path, monkeypatch):
    stream = journal_stream_for(tmp_path / "journal", monkeypatch)
    with stream:
        assert logs.stderr_is_journal(stream)
        logs.setup_logging("debug", stream=stream)  # journal=None, but systemd-python is absent
        log = logging.getLogger("modemd.sup")
        log.debug("d")
        log.info("i", extra={"CONNECT_ID": 0})
        log.warning("w")
        log.error("e")
        log.critical("c")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    lines = (tmp_path / "journal").read_text().splitlines()
    assert lines[:5] == [
        "<7>modemd.sup: d",
        "<6>modemd.sup: i connect_id=0",
        "<4>modemd.sup: w",
        "<3>modemd.sup: e",
        "<2>modemd.sup: c",
    ]
    assert lines[5] == "<3>modemd.sup: failed"
    assert lines[6] == "<3>Traceback (most recent call last):"
    assert lines[-1] == "<3>RuntimeError: boom"
    assert all(line.startswith("<3>") for line in lines[5:])


def test_journal_stream_mismatch_means_no_prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    with open(tmp_path / "f", "w") as stream:
        assert not logs.stderr_is_journal(stream)
    assert logs.stderr_is_journal(io.StringIO())  # no fd: trust the variable
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not logs.stderr_is_journal(io.StringIO())


def test_prefix_flag_forces_prefix():
    stream = TtyStream()
    logs.setup_logging(journal=False, stream=stream, syslog_prefix=True)
    logging.getLogger("modemd.x").warning("forced")
    assert stream.getvalue() == "<4>modemd.x: forced\n"


def test_capsys_default_stream(capsys, monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")  # capsys's stderr has no fd: variable trusted
    logs.setup_logging()
    logging.getLogger("modemd.x").info("via sys.stderr")
    assert capsys.readouterr().err == "<6>modemd.x: via sys.stderr\n"


def test_secrets_never_reach_stderr(tmp_path):
    logs.register_secret("hunter2-apn")
    stream = TtyStream()
    logs.setup_logging("debug", journal=False, stream=stream)
    log = logging.getLogger("modemd.cfg")
    log.info("apn password %s", "hunter2-apn")
    log.info("literal hunter2-apn in message", extra={"FORWARD": "user:hunter2-apn@host"})
    try:
        raise ValueError("bad password hunter2-apn")
    except ValueError:
        log.exception("login failed")
    log.info("stack", stack_info=True, extra={"CONNECT_ID": "hunter2-apn"})
    out = stream.getvalue()
    assert "hunter2-apn" not in out
    assert "apn password ***" in out and "forward=user:***@host" in out
    assert "ValueError: bad password ***" in out and "connect_id=***" in out


def test_formatter_redacts_on_its_own():
    logs.register_secret("topsecret")
    record = logging.LogRecord("modemd.x", logging.INFO, __file__, 1, "pw %s", ("topsecret",), None)
    assert logs.StderrFormatter().format(record) == "INFO modemd.x: pw ***"


def test_bad_format_string_is_not_lost():
    stream = TtyStream()
    handler = logs.setup_logging(journal=False, stream=stream)
    log = logging.getLogger("modemd.badfmt")  # kept away from pytest's handler, which would raise
    log.propagate = False
    log.addHandler(handler)
    try:
        log.info("%d items", "many")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert "'%d items' % ('many',)" in stream.getvalue()


# --------------------------------------------------------------------------- journal path


def test_journal_handler_with_fields(fake_journal, monkeypatch, tmp_path):
    stream = journal_stream_for(tmp_path / "stderr", monkeypatch)
    with stream:
        handler = logs.setup_logging("info", stream=stream)
        assert type(handler).__name__ == "JournalHandler"
        assert handler.defaults == {"SYSLOG_IDENTIFIER": "modemd"}
        log = logging.getLogger("modemd.sockets")
        log.info(
            "opened %s", "tcp", extra={"CONNECT_ID": 2, "MODEM_STATE": "ready", "FORWARD": "web"}
        )
        log.debug("not shown")
    assert (tmp_path / "stderr").read_text() == ""
    [entry] = fake_journal
    assert entry["MESSAGE"] == "opened tcp"  # fields travel as fields, not as a suffix
    assert entry["SYSLOG_IDENTIFIER"] == "modemd"
    assert (
        entry["CONNECT_ID"] == 2 and entry["MODEM_STATE"] == "ready" and entry["FORWARD"] == "web"
    )
    assert entry["PRIORITY"] == "6" and entry["LOGGER"] == "modemd.sockets"
    assert "CODE_ARGS" not in entry  # args are baked into the message (and redacted) first


def test_journal_secrets_redacted_everywhere(fake_journal):
    logs.register_secret("hunter2-apn")
    logs.setup_logging(journal=True)
    log = logging.getLogger("modemd.cfg")
    log.info("password %s", "hunter2-apn", extra={"FORWARD": "x hunter2-apn"})
    try:
        raise ValueError("hunter2-apn rejected")
    except ValueError:
        log.exception("login failed")
    assert len(fake_journal) == 2
    assert "hunter2-apn" not in repr(fake_journal)
    assert fake_journal[0]["MESSAGE"] == "password ***" and fake_journal[0]["FORWARD"] == "x ***"
    assert "EXCEPTION_INFO" not in fake_journal[1]
    assert fake_journal[1]["EXCEPTION_TEXT"].endswith("ValueError: *** rejected")
    assert fake_journal[1]["PRIORITY"] == "3"


def test_journal_auto_detection(fake_journal, tmp_path, monkeypatch):
    # no JOURNAL_STREAM, no journald socket -> stderr
    assert not logs.journal_available(io.StringIO())
    sock = tmp_path / "journal.socket"
    sock.touch()
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(sock))
    assert logs.journal_available(io.StringIO())  # socket and not a terminal
    assert not logs.journal_available(TtyStream())  # run by hand: the user reads the terminal
    monkeypatch.setattr(logs, "JOURNAL_SOCKET", str(tmp_path / "gone"))
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    with open(tmp_path / "f", "w") as other:
        assert not logs.journal_available(other)  # JOURNAL_STREAM is for another file
    # journal=False always wins
    handler = logs.setup_logging(journal=False, stream=io.StringIO())
    assert isinstance(handler, logging.StreamHandler)


def test_journal_requested_but_missing(capsys):
    stream = TtyStream()
    handler = logs.setup_logging(journal=True, stream=stream)
    assert isinstance(handler, logging.StreamHandler)
    assert "systemd-python is not installed" in stream.getvalue()
    assert not logs.journal_available(stream)
