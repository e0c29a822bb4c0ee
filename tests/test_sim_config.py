"""[sim] pin / pin_file: 4-8 digits, a secret (never in repr or error text), file relative to the
configuration, mutually exclusive, unknown keys named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modemd.config import Config, ConfigError, SimConfig, check_config, load_config, parse_config


def errors_of(text: str, base_dir=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=base_dir, emulate=True)
    return info.value.errors


def test_default_is_empty():
    cfg = parse_config("", emulate=True)
    assert cfg.sim == SimConfig() and cfg.sim.pin == "" and cfg.sim.pin_file == ""
    assert Config().sim == SimConfig()


def test_inline_pin():
    cfg = parse_config('[sim]\npin = "04711"\n', emulate=True)
    assert cfg.sim.pin == "04711" and cfg.sim.pin_file == ""
    assert "04711" not in repr(cfg) and "04711" not in str(cfg.sim)


@pytest.mark.parametrize("pin", ["123", "123456789", "12a4", "１２３４", " 1234", ""])
def test_bad_inline_pin_never_echoed(pin):
    if pin == "":
        assert parse_config('[sim]\npin = ""\n', emulate=True).sim.pin == ""
        return
    errs = errors_of(f'[sim]\npin = "{pin}"\n')
    assert len(errs) == 1 and errs[0].startswith("sim.pin: ")
    assert "4 to 8 digits" in errs[0]
    assert pin.strip() not in errs[0]


def test_pin_must_be_a_string():
    errs = errors_of("[sim]\npin = 1234\n")  # a TOML integer would lose a PIN's leading zeros
    assert len(errs) == 1 and errs[0].startswith("sim.pin: must be a ")
    assert "string" in errs[0] and errs[0].endswith("got integer")


def test_unknown_key_suggests():
    errs = errors_of('[sim]\npn = "1234"\n')
    assert errs == ["sim.pn: unknown key; did you mean 'pin'?"]
    assert errors_of('[sims]\npin = "1234"\n')[0].startswith("sims: unknown section")


def test_pin_file_relative_to_config_and_stripped(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "pin").write_text("  4711\n\n")
    cfg_file = tmp_path / "modemd.toml"
    cfg_file.write_text('[modem]\nport = ""\n[sim]\npin_file = "secrets/pin"\n')
    cfg = load_config(cfg_file, emulate=True)
    assert cfg.sim.pin == "4711"
    assert cfg.sim.pin_file == str(tmp_path / "secrets" / "pin")
    assert "4711" not in repr(cfg)


def test_pin_file_absolute(tmp_path):
    path = tmp_path / "pin"
    path.write_text("12345678")
    cfg = parse_config(f'[sim]\npin_file = "{path}"\n', emulate=True)
    assert cfg.sim.pin == "12345678" and cfg.sim.pin_file == str(path)


@pytest.mark.parametrize("content", ["12", "12 34", "abcd", "123456789", "9" * 200])
def test_bad_pin_file_content_never_echoed(tmp_path, content):
    (tmp_path / "pin").write_text(content)
    errs = errors_of('[sim]\npin_file = "pin"\n', base_dir=tmp_path)
    assert len(errs) == 1 and errs[0].startswith("sim.pin_file: the PIN in ")
    assert "4 to 8 digits" in errs[0]
    # the file's path is named (pytest's tmp_path may hold the same digits: pytest-122 has "12")
    assert content not in errs[0].replace(str(tmp_path / "pin"), "<path>")
    assert str(tmp_path / "pin") in errs[0]


def test_pin_file_bounded(tmp_path):
    errs = errors_of('[sim]\npin_file = "/dev/zero"\n')
    assert len(errs) == 1 and errs[0].startswith("sim.pin_file: the PIN in '/dev/zero'")


def test_pin_file_missing_and_unreadable(tmp_path):
    errs = errors_of('[sim]\npin_file = "nope"\n', base_dir=tmp_path)
    assert errs == [f"sim.pin_file: cannot read {str(tmp_path / 'nope')!r}: no such file"]
    if os.geteuid() != 0:
        path = tmp_path / "pin"
        path.write_text("1234")
        path.chmod(0)
        errs = errors_of('[sim]\npin_file = "pin"\n', base_dir=tmp_path)
        assert "permission denied" in errs[0]


def test_pin_and_pin_file_are_exclusive(tmp_path):
    (tmp_path / "pin").write_text("1234")
    errs = errors_of('[sim]\npin = "5678"\npin_file = "pin"\n', base_dir=tmp_path)
    assert errs == ["sim.pin_file: sim.pin and sim.pin_file are mutually exclusive; remove one"]
    assert "5678" not in errs[0]


def test_errors_are_collected_with_other_sections():
    errs = errors_of('[pdp]\ncontext_id = 99\n[sim]\npin = "12"\n')
    assert [e.split(":")[0] for e in errs] == ["pdp.context_id", "sim.pin"]


def test_check_config_cli_names_the_key_without_the_pin(tmp_path):
    cfg_file = tmp_path / "modemd.toml"
    cfg_file.write_text('[sim]\npin = "12x4"\n')
    assert check_config(cfg_file, emulate=True) == ["sim.pin: must be 4 to 8 digits (0-9)"]
    out = subprocess.run([sys.executable, "-m", "modemd.cli", "check-config", "--emulate",
                          str(cfg_file)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "sim.pin: must be 4 to 8 digits" in out.stdout + out.stderr
    assert "12x4" not in out.stdout + out.stderr


def test_example_config_documents_sim():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "config" / "modemd.toml").read_text()
    assert "[sim]" in text and "pin_file" in text
    parse_config(text, emulate=True)  # the example stays valid
