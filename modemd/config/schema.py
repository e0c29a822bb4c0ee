"""The schema engine: dataclass field metadata drives parsing, key paths, defaults and error text.

A section is a frozen dataclass; each field that is a TOML key is declared with :func:`setting`
(its kind, doc, secret, required text, default or context-dependent default, exclusive key).
:func:`read_table` reads one TOML table into it: unknown keys (with "did you mean"), then every
field in declaration order, then the section's ``__checks__`` (rules across its own fields).  Every
problem is recorded with its key path and reading goes on, so all errors come out at once; a field
that failed keeps its default.  Rules across sections live in ``checks.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

from .errors import ConfigError, suggest, typename, with_key

T = TypeVar("T")
META = "modemd"


@dataclass
class Context:
    """What reading needs beyond the table itself, shared by the whole file."""

    base_dir: Path
    emulate: bool = False
    instance: str = ""
    errors: list[str] = field(default_factory=list)
    #: top-level sections read so far, by TOML key (a default may depend on an earlier section)
    sections: dict[str, Any] = field(default_factory=dict)
    #: array entries by TOML key, indices as in the file (invalid ones too)
    entries: dict[str, list[Entry]] = field(default_factory=dict)


class Entry(NamedTuple):
    """One array entry for the cross-section checks: its key path, its value (None when
    invalid) and the field values that did parse (an invalid entry is still checked)."""

    path: str
    value: Any
    fields: Mapping[str, Any]


class Kind(Protocol):
    """How one TOML value becomes a field value; raises ValueError/ConfigError with the problem."""

    def parse(self, value: Any, at: At) -> Any: ...


@dataclass(frozen=True)
class Derived:
    """A parsed value that also sets other (non-key) fields, e.g. group -> gid."""

    value: Any
    extra: Mapping[str, Any]


@dataclass(frozen=True)
class Meta:
    """A field's schema: see :func:`setting`."""

    kind: Kind | None  # None: not a TOML key (set by another field's Derived value)
    key: str | None = None
    doc: str = ""
    secret: bool = False
    required: str | Callable[[Context], str | None] | None = None
    default_from: Callable[[Context], Any] | None = None
    excludes: str | None = None


def setting(
    default: Any = MISSING,
    kind: Kind | None = None,
    *,
    doc: str = "",
    default_factory: Callable[[], Any] | Any = MISSING,
    key: str | None = None,
    secret: bool = False,
    required: str | Callable[[Context], str | None] | None = None,
    default_from: Callable[[Context], Any] | None = None,
    excludes: str | None = None,
) -> Any:
    """A dataclass field that is a TOML key.

    ``kind`` parses and checks the value; ``key`` is the TOML name when it differs from the field;
    ``secret`` keeps the value out of repr and error text; ``required`` is the error text when the
    key is absent (a callable may waive it for a context); ``default_from`` computes the default
    from the context (e.g. an earlier section); ``excludes`` names a key that may not be set too.
    ``kind=None`` declares a field set only by another field (``Derived``), never read from TOML.
    """
    meta = Meta(kind, key, doc, secret, required, default_from, excludes)
    extra: dict[str, Any] = {"metadata": {META: meta}, "repr": not secret}
    if default_factory is not MISSING:
        extra["default_factory"] = default_factory
    elif default is not MISSING:
        extra["default"] = default
    return field(**extra)


def section(cls: type, shape: str = "table", *, key: str | None = None, doc: str = "") -> Any:
    """A field holding a sub-table (see :class:`Section`); absent: defaults, None or ()."""
    kind = Section(cls, shape)
    if shape == TABLE:
        return setting(default_factory=cls, kind=kind, key=key, doc=doc)
    if shape == TABLE_OR_ARRAY:  # absent: one entry of defaults
        return setting(default_factory=lambda: (cls(),), kind=kind, key=key, doc=doc)
    return setting(None if shape == OPTIONAL else (), kind, key=key, doc=doc)


def meta_of(f: dataclasses.Field[Any]) -> Meta | None:
    return f.metadata.get(META)


def toml_keys(cls: type) -> tuple[str, ...]:
    """The keys a section accepts, in declaration order."""
    keys = []
    for f in dataclasses.fields(cls):
        meta = meta_of(f)
        if meta is not None and meta.kind is not None:
            keys.append(meta.key or f.name)
    return tuple(keys)


class Table:
    """One TOML table being read: its raw data, the values so far and the keys that failed."""

    def __init__(self, path: str, data: Mapping[str, Any], ctx: Context) -> None:
        self.path = path
        self.data = data
        self.ctx = ctx
        self.values: dict[str, Any] = {}
        self.failed: set[str] = set()

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def err(self, k: str, msg: str) -> None:
        self.ctx.errors.append(f"{self.key(k)}: {msg}")

    def has(self, k: str) -> bool:
        return k in self.data

    def raw(self, k: str, default: Any = None) -> Any:
        return self.data.get(k, default)

    def value(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def set(self, name: str, value: Any) -> None:
        self.values[name] = value

    def drop(self, name: str) -> None:
        """The value is unusable: a required field makes the whole entry invalid."""
        self.values.pop(name, None)
        self.failed.add(name)


@dataclass(frozen=True)
class At:
    """Where a value is being parsed: its key path, secrecy, table and context."""

    key: str
    secret: bool
    table: Table

    @property
    def ctx(self) -> Context:
        return self.table.ctx


def _default(f: dataclasses.Field[Any], meta: Meta, ctx: Context) -> Any:
    if meta.default_from is not None:
        return meta.default_from(ctx)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _parse_one(kind: Kind, value: Any, at: At) -> Any:
    """The kind's value, or MISSING after recording its error line(s)."""
    try:
        return kind.parse(value, at)
    except ConfigError as exc:
        at.ctx.errors.extend(exc.errors)
    except ValueError as exc:
        at.ctx.errors.append(with_key(at.key, str(exc)))
    return MISSING


def _excluded(t: Table, key: str, other: str, value: Any) -> bool:
    """Two ways to give one value (``password`` / ``password_file``): "" counts as not given."""
    if not (isinstance(value, str) and value) or t.raw(other, "") == "":
        return False
    t.err(key, f"{t.key(other)} and {t.key(key)} are mutually exclusive; remove one")
    return True


def _unknown_keys(t: Table, known: tuple[str, ...]) -> None:
    for k in t.data:
        if k in known:
            continue
        if t.path:
            t.err(k, "unknown key" + suggest(k, known))
        else:
            what = "section" if isinstance(t.data[k], (Mapping, list)) else "key"
            t.err(k, f"unknown {what}" + suggest(k, known))


def _read_fields(cls: type, t: Table) -> None:
    extras: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = meta_of(f)
        if meta is None or meta.kind is None:
            continue
        value = _read_field(f, meta, t)
        if isinstance(value, Derived):
            extras.update(value.extra)
            value = value.value
        if value is MISSING:
            value = _default(f, meta, t.ctx)
        if value is not MISSING:
            t.values[f.name] = value
        if not t.path:
            t.ctx.sections[meta.key or f.name] = value
    t.values.update(extras)


def _read_field(f: dataclasses.Field[Any], meta: Meta, t: Table) -> Any:
    """The value from the field's key, or MISSING (absent or invalid: the default applies)."""
    key = meta.key or f.name
    at = At(t.key(key), meta.secret, t)
    if key not in t.data:
        if isinstance(meta.kind, Section):
            return meta.kind.missing(at)  # absent: defaults, None or ()
        required = meta.required(t.ctx) if callable(meta.required) else meta.required
        if required:
            t.err(key, required)
        return MISSING
    value = MISSING
    if not (meta.excludes and _excluded(t, key, meta.excludes, t.data[key])):
        value = _parse_one(meta.kind, t.data[key], at)
    if value is MISSING:
        t.failed.add(f.name)
    return value


def read_table(cls: type[T], data: Any, path: str, ctx: Context) -> T | None:
    """Read one table into ``cls``; None when the entry is unusable (its errors are recorded)."""
    return _read(cls, data, path, ctx)[0]


def _read(cls: type[T], data: Any, path: str, ctx: Context) -> tuple[T | None, dict[str, Any]]:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        if "[" in path:  # an array entry: nothing more to say about it
            ctx.errors.append(f"{path}: must be a table, got {typename(data)}")
            return None, {}
        ctx.errors.append(f"{path}: must be a table ([{path}]), got {typename(data)}")
        data = {}
    t = Table(path, data, ctx)
    _unknown_keys(t, toml_keys(cls))
    _read_fields(cls, t)
    for check in getattr(cls, "__checks__", ()):
        check(t)
    names = {f.name for f in dataclasses.fields(cls)}
    needed = {
        f.name for f in dataclasses.fields(cls)
        if f.default is MISSING and f.default_factory is MISSING
    }  # fmt: skip
    if not needed <= t.values.keys():
        return None, t.values
    return cls(**{k: v for k, v in t.values.items() if k in names}), t.values


TABLE, OPTIONAL, ARRAY, TABLE_OR_ARRAY = "table", "optional", "array", "table_or_array"


@dataclass(frozen=True)
class Section:
    """A field holding a sub-table.

    ``table``: always present (absent = defaults); ``optional``: None when absent; ``array``:
    ``[[name]]`` entries as a tuple, key paths ``name[i].key``; ``table_or_array``: either a
    single ``[name]`` (key paths ``name.key``) or ``[[name]]`` entries, read as a tuple
    (absent: one entry of defaults, as for an absent ``table``).
    """

    cls: type
    shape: str = TABLE

    def missing(self, at: At) -> Any:
        if self.shape == TABLE:
            return read_table(self.cls, None, at.key, at.ctx)
        if self.shape == OPTIONAL:
            return None
        if self.shape == TABLE_OR_ARRAY:  # absent: one entry of defaults
            value = read_table(self.cls, None, at.key, at.ctx)
            at.ctx.entries[at.key] = [Entry(at.key, value, {})]
            return (value,)
        at.ctx.entries[at.key] = []
        return ()

    def parse(self, value: Any, at: At) -> Any:
        if self.shape in (TABLE, OPTIONAL):
            return read_table(self.cls, value, at.key, at.ctx)
        return self._entries(value, at)

    def _entries(self, value: Any, at: At) -> tuple[Any, ...]:
        name = at.key
        at.ctx.entries[name] = []
        if isinstance(value, Mapping) and self.shape == TABLE_OR_ARRAY:
            items = [(name, value)]
        elif isinstance(value, Mapping):
            raise ValueError(f"must be an array of tables: write [[{name}]], not [{name}]")
        elif not isinstance(value, list):
            raise ValueError(f"must be an array of tables ([[{name}]]), got {typename(value)}")
        else:
            items = [(f"{name}[{i}]", item) for i, item in enumerate(value)]
        entries = at.ctx.entries[name]
        for path, item in items:
            entries.append(Entry(path, *_read(self.cls, item, path, at.ctx)))
        return tuple(e.value for e in entries if e.value is not None)
