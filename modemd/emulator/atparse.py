"""The emulator's own AT command-line parser (deliberately independent of `modemd.at`).

A command line is the text after the "AT" prefix. It may hold several commands:
basic ones (`E0`, `V1`, `&F`, `I`, `S3=13`) back to back and extended ones (`+QIOPEN=...`)
separated by `;` (V.250 §5.2). Each command has a kind: exec, read (`?`), test (`=?`) or write (`=`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ParseError(ValueError):
    pass


class BadParam(ValueError):
    """A parameter is missing, malformed or out of range."""


@dataclass(frozen=True)
class Arg:
    text: str
    quoted: bool

    @property
    def empty(self) -> bool:
        return not self.quoted and self.text == ""


@dataclass
class Command:
    name: str  # upper case: "+QIOPEN", "E", "&F", "S3", "" (bare AT)
    kind: str  # "exec" | "read" | "test" | "write"
    args: list[Arg] = field(default_factory=list)
    num: int | None = None  # basic commands: the number after the letter (E0 -> 0)

    # ---- argument helpers -----------------------------------------------------------------
    def has(self, i: int) -> bool:
        return i < len(self.args) and not self.args[i].empty

    def int(self, i: int, lo: int | None = None, hi: int | None = None, default=None) -> int:
        if not self.has(i):
            if default is None:
                raise BadParam(f"parameter {i} missing")
            return default
        arg = self.args[i]
        text = arg.text.strip()
        if not text or not (text.isdigit() or (text[0] == "-" and text[1:].isdigit())):
            raise BadParam(f"parameter {i} is not an integer: {arg.text!r}")
        value = int(text)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise BadParam(f"parameter {i} out of range: {value}")
        return value

    def str(self, i: int, default=None, maxlen: int | None = None, quoted: bool = False) -> str:
        if not self.has(i):
            if default is None:
                raise BadParam(f"parameter {i} missing")
            return default
        arg = self.args[i]
        if quoted and not arg.quoted:
            raise BadParam(f"parameter {i} must be quoted")
        if maxlen is not None and len(arg.text) > maxlen:
            raise BadParam(f"parameter {i} too long")
        return arg.text

    def nargs(self, lo: int, hi: int) -> None:
        if not lo <= len(self.args) <= hi:
            raise BadParam(f"{len(self.args)} parameters, expected {lo}..{hi}")


def _parse_args(text: str, i: int) -> tuple[list[Arg], int]:
    """Parse a comma separated argument list starting at text[i]; stop at ';' or end."""
    args: list[Arg] = []
    n = len(text)
    while True:
        # one argument
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == '"':
            j = text.find('"', i + 1)
            if j < 0:
                raise ParseError("unterminated string")
            args.append(Arg(text[i + 1 : j], True))
            i = j + 1
            while i < n and text[i] == " ":
                i += 1
        else:
            j = i
            while j < n and text[j] not in ",;":
                if text[j] == '"':
                    raise ParseError("quote inside an unquoted parameter")
                j += 1
            args.append(Arg(text[i:j].strip(), False))
            i = j
        if i >= n or text[i] == ";":
            return args, i
        if text[i] != ",":
            raise ParseError(f"unexpected {text[i]!r} after a parameter")
        i += 1


def parse(text: str) -> list[Command]:
    """Parse the text after "AT" into commands. Raises ParseError."""
    cmds: list[Command] = []
    if text.strip() == "":
        return [Command("", "exec")]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " ;":
            i += 1
            continue
        if c in "+$%^#":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] in "_"):
                j += 1
            name = text[i:j].upper()
            if len(name) < 2:
                raise ParseError("empty extended command name")
            if text.startswith("=?", j):
                cmds.append(Command(name, "test"))
                j += 2
            elif text.startswith("?", j):
                cmds.append(Command(name, "read"))
                j += 1
            elif text.startswith("=", j):
                args, j = _parse_args(text, j + 1)
                cmds.append(Command(name, "write", args))
            else:
                cmds.append(Command(name, "exec"))
            while j < n and text[j] == " ":
                j += 1
            if j < n and text[j] != ";":
                raise ParseError(f"junk after {name}: {text[j:]!r}")
            i = j + 1
            continue
        if c.isalpha() or c == "&":
            j = i + 1
            if c == "&":
                if j >= n or not text[j].isalpha():
                    raise ParseError("bad & command")
                j += 1
            name = text[i:j].upper()
            if name == "S":
                k = j
                while k < n and text[k].isdigit():
                    k += 1
                if k == j:
                    raise ParseError("S without register number")
                name = "S" + text[j:k]
                j = k
                if text.startswith("=?", j):
                    cmds.append(Command(name, "test"))
                    j += 2
                elif text.startswith("?", j):
                    cmds.append(Command(name, "read"))
                    j += 1
                elif text.startswith("=", j):
                    k = j + 1
                    while k < n and text[k].isdigit():
                        k += 1
                    cmds.append(Command(name, "write", [Arg(text[j + 1 : k], False)]))
                    j = k
                else:
                    cmds.append(Command(name, "exec"))
                i = j
                continue
            k = j
            while k < n and text[k].isdigit():
                k += 1
            num = int(text[j:k]) if k > j else None
            cmds.append(Command(name, "exec", num=num))
            i = k
            continue
        raise ParseError(f"unexpected {c!r}")
    return cmds or [Command("", "exec")]  # "AT;" is a bare AT


def find_at(line: bytes) -> int:
    """Index of the "AT" prefix of a command line (any case), -1 if there is none.

    Non-letter bytes before the prefix (NULs, stray LF, spaces, line noise) are ignored, as a
    module's parser does; a line that does not then start with "AT" is not a command."""
    i = 0
    while i < len(line) and not (65 <= line[i] <= 90 or 97 <= line[i] <= 122):
        i += 1
    return i if line[i : i + 2].lower() == b"at" else -1


def quote_ok(text: str) -> bool:
    return not any(ch in text for ch in '"\r\n\x00')
