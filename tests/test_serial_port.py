"""Opening something that is not a tty ends in one line that names the fix (modem.port)."""

from __future__ import annotations

import pytest

from modemd.serial import SerialError, SerialPort


@pytest.mark.parametrize("kind", ["memory device", "regular file", "directory"])
def test_a_port_that_is_not_a_tty_is_one_line_naming_modem_port(tmp_path, kind):
    path = {"memory device": "/dev/null", "directory": str(tmp_path)}.get(kind)
    if path is None:
        path = str(tmp_path / "ttyFILE")
        (tmp_path / "ttyFILE").write_text("")
    with pytest.raises(SerialError) as info:
        SerialPort.open(path, lock_dir=str(tmp_path))
    text = str(info.value)
    assert "is not a serial port" in text and "modem.port" in text, text
    assert "\n" not in text
