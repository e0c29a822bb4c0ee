"""The config schema engine: field metadata drives keys, defaults, secrets and error text."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from modemd import profiles
from modemd.at import commands
from modemd.config import AUTH_MODES, IP_TYPES, MODELS, Config, ConfigError, parse_config
from modemd.config.kinds import Int, Str
from modemd.config.schema import (
    TABLE_OR_ARRAY,
    Context,
    Section,
    meta_of,
    read_table,
    section,
    setting,
    toml_keys,
)

PORT = '[modem]\nport = "/dev/ttyUSB2"\n'


def sections() -> list[tuple[str, type]]:
    """(TOML key, dataclass) of every section of Config, read from the schema itself."""
    out = []
    for f in dataclasses.fields(Config):
        meta = meta_of(f)
        assert meta is not None and isinstance(meta.kind, Section), f.name
        out.append((meta.key or f.name, meta.kind.cls))
    return out


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text if "[modem]" in text else text + PORT)
    return info.value.errors


# ------------------------------------------------------------------------ one vocabulary


def test_vocabularies_have_one_source() -> None:
    assert MODELS == ("auto", *profiles.MODEL_NAMES)
    assert set(profiles.MODEL_NAMES) == set(profiles.PROFILES)
    assert AUTH_MODES is commands.AUTH and IP_TYPES is commands.IP_TYPES
    pdp = {f.name: meta_of(f) for f in dataclasses.fields(parse_config(PORT).pdp[0])}
    assert pdp["auth"].kind.choices == tuple(commands.AUTH)
    assert pdp["ip_type"].kind.choices == tuple(commands.IP_TYPES)


def test_model_error_lists_the_profiles() -> None:
    (error,) = errors_of('[modem]\nport = "/dev/ttyUSB2"\nmodel = "bg77"\n')
    assert error == f"modem.model: must be one of {', '.join(MODELS)}, got 'bg77'"


# ------------------------------------------------------------------- the schema, generically


def test_every_field_is_declared() -> None:
    """A field is either a TOML key with a kind or set by one (gid, remote_port); no field
    escapes the schema, and every secret is kept out of repr."""
    for name, cls in sections():
        for f in dataclasses.fields(cls):
            meta = meta_of(f)
            assert meta is not None, f"{name}.{f.name} has no schema metadata"
            if meta.secret:
                assert not f.repr, f"{name}.{f.name}"
        keys = toml_keys(cls)
        assert len(set(keys)) == len(keys), name


@pytest.mark.parametrize(("name", "cls"), sections(), ids=[n for n, _ in sections()])
def test_every_key_is_suggested_when_misspelt(name: str, cls: type) -> None:
    table = f"[[{name}]]" if name in ("forward", "listen") else f"[{name}]"
    for key in toml_keys(cls):
        typo = key[:-1] + "_" if len(key) > 3 else key + "x"
        errors = errors_of(f"{table}\n{typo} = 1\n")
        path = f"{name}[0]" if name in ("forward", "listen") else name
        expected = f"{path}.{typo}: unknown key; did you mean {key!r}?"
        assert expected in errors, (expected, errors)


@pytest.mark.parametrize(("name", "cls"), sections(), ids=[n for n, _ in sections()])
def test_secrets_never_in_error_text(name: str, cls: type) -> None:
    """A secret given with the wrong type, or as an invalid string, is never echoed."""
    secrets = [meta_of(f).key or f.name for f in dataclasses.fields(cls) if meta_of(f).secret]
    for key in secrets:
        for value in ("Zq7\x01secret-value", ["Zq7secret-value"], 987654321012):
            text = f"[{name}]\n{key} = {json.dumps(value)}\n"
            errors = errors_of(text)
            assert any(e.startswith(f"{name}.{key}: ") for e in errors), errors
            assert not any("secret-value" in e or "987654321012" in e for e in errors), errors


# --------------------------------------------------------- a table or an array of tables


@dataclasses.dataclass(frozen=True)
class Pdp:
    context_id: int = setting(1, Int(1, 16))
    apn: str = setting("internet", Str(choices=("internet", "iot")))


@dataclasses.dataclass(frozen=True)
class Top:
    pdp: tuple[Pdp, ...] = section(Pdp, TABLE_OR_ARRAY)


def read(data: dict, tmp_path: Path) -> tuple[Top | None, Context]:
    ctx = Context(tmp_path)
    return read_table(Top, data, "", ctx), ctx


def test_table_or_array_single_table(tmp_path: Path) -> None:
    top, ctx = read({"pdp": {"context_id": 2}}, tmp_path)
    assert top == Top((Pdp(2),)) and ctx.errors == []
    _, ctx = read({"pdp": {"apn": "x"}}, tmp_path)
    assert ctx.errors == ["pdp.apn: must be one of internet, iot, got 'x'"]


def test_table_or_array_entries_have_their_index(tmp_path: Path) -> None:
    data = {"pdp": [{"context_id": 1}, {"context_id": 3, "apn": "iot"}, {"apn": "y", "ap": 1}]}
    top, ctx = read(data, tmp_path)
    assert top is not None and [c.context_id for c in top.pdp] == [1, 3, 1]
    assert ctx.errors == [
        "pdp[2].ap: unknown key; did you mean 'apn'?",
        "pdp[2].apn: must be one of internet, iot, got 'y'",
    ]
    assert [e.path for e in ctx.entries["pdp"]] == ["pdp[0]", "pdp[1]", "pdp[2]"]
    top, ctx = read({}, tmp_path)  # absent: one entry of defaults, as an absent [table]
    assert top == Top((Pdp(),)) and [e.path for e in ctx.entries["pdp"]] == ["pdp"]
