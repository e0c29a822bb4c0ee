"""Shared plumbing of the fuzz targets: atheris when it is installed, a corpus replayer otherwise.

Every target defines ``test_one_input(data: bytes) -> None`` that raises (AssertionError or the
escaping exception) on a finding. ``main(test_one_input)`` then either

* hands it to atheris (``python fuzz/fuzz_x.py fuzz/corpus/x -max_total_time=60``: libFuzzer flags
  and corpus directories as usual), or
* without atheris (or with ``--replay``), runs it once on every file of the given files and
  directories and exits 1 if any input failed (a plain-Python regression run of the corpus).

Targets decode their input with ``Input`` (below), not ``atheris.FuzzedDataProvider``, so both modes
read a given byte string in exactly the same way and a crash file reproduces without atheris.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

try:  # pragma: no cover - depends on the environment
    import atheris
except ImportError:  # pragma: no cover
    atheris = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@contextmanager
def instrumented() -> Iterator[None]:
    """Import modemd under atheris' coverage instrumentation (a no-op without atheris)."""
    if atheris is None or "--replay" in sys.argv:
        yield
        return
    with atheris.instrument_imports(include=["modemd"]):
        yield


class Input:
    """A tiny, deterministic reader of fuzzer bytes (the same with and without atheris)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, lo: int, hi: int) -> int:
        """An integer in lo..hi from one or two bytes (0 when the input is exhausted)."""
        span = hi - lo + 1
        raw = self.byte() if span <= 256 else (self.byte() << 8) | self.byte()
        return lo + raw % span

    def bool(self) -> bool:
        return bool(self.byte() & 1)

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def bytes(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def rest(self) -> bytes:
        return self.bytes(self.left)

    def text(self, max_len: int = 64) -> str:
        """Latin-1 text, length from one byte (so any string of up to max_len is reachable)."""
        return self.bytes(self.int(0, max_len)).decode("latin-1")


def chunks(data: bytes, seed: int) -> Iterator[bytes]:
    """Split data into pieces whose sizes follow from `seed` (1-byte pieces included)."""
    import random

    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.choice((1, 1, 2, 3, 5, 8, 13, 64, 512, 4096))
        yield data[i : i + n]
        i += n


def _files(paths: list[str]) -> Iterator[str]:
    for p in paths:
        if os.path.isdir(p):
            for name in sorted(os.listdir(p)):
                full = os.path.join(p, name)
                if os.path.isfile(full):
                    yield full
        else:
            yield p


def replay(test_one_input: Callable[[bytes], None], paths: list[str]) -> int:
    failed = ran = 0
    for path in _files(paths):
        with open(path, "rb") as f:
            data = f.read()
        ran += 1
        try:
            test_one_input(data)
        except Exception:
            failed += 1
            print(f"FAIL {path}", file=sys.stderr)
            traceback.print_exc()
    print(f"replayed {ran} inputs, {failed} failed")
    return 1 if failed else 0


def main(test_one_input: Callable[[bytes], None]) -> None:
    args = sys.argv[1:]
    if atheris is None or "--replay" in args:
        paths = [a for a in args if not a.startswith("-")]
        if not paths:
            print("no atheris: give corpus files or directories to replay", file=sys.stderr)
            sys.exit(2)
        sys.exit(replay(test_one_input, paths))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
