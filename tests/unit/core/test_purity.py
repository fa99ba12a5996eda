"""core/ is sans-I/O: importable without asyncio, aiohttp or time; no clock or global RNG use.

Two checks: (1) a fresh interpreter makes ``asyncio``, ``aiohttp`` and ``time`` unimportable
(a meta-path finder that raises, with any loaded copies evicted first) and imports every
module under ``ascendra_proxy/core`` (numpy is loaded before the block: it is an allowed
dependency whose internals import ``time``); (2) the code tokens (comments and strings excluded) of
every core source file are searched for clock reads and global-RNG calls.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

import ascendra_proxy.core

CORE_DIR = Path(ascendra_proxy.core.__file__).parent
SOURCES = sorted(CORE_DIR.rglob("*.py"))

BLOCKED_IMPORT_SCRIPT = r"""
import importlib, sys

# Third-party numeric libraries core may use are loaded first: their own internals may use
# the clock (numpy's datetime support imports ``time``); the rule is about core's code.
import numpy

BLOCKED = {"asyncio", "aiohttp", "time"}
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]

class Blocker:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"core must not import {name}")
        return None

sys.meta_path.insert(0, Blocker)
import ascendra_proxy.core
for name in sys.argv[1:]:
    importlib.import_module(name)
    print(name)
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
assert not leaked, leaked
"""


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE_DIR).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("ascendra_proxy", "core", *parts))


def test_every_core_module_imports_with_asyncio_aiohttp_and_time_blocked() -> None:
    modules = [module_name(p) for p in SOURCES]
    assert "ascendra_proxy.core.policies.round_robin" in modules
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT_SCRIPT, *modules],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == modules


def test_the_blocker_really_blocks() -> None:
    """The import check above can fail: a module importing asyncio is caught."""
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT_SCRIPT, "ascendra_proxy.core", "asyncio"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "core must not import asyncio" in proc.stderr


FORBIDDEN = [
    (re.compile(r"\btime\.(time|monotonic|perf_counter|process_time)(_ns)?\s*\("), "clock read"),
    (re.compile(r"\bfrom\s+time\s+import\b"), "clock import"),
    (re.compile(r"\bdatetime\.(now|utcnow|today)\s*\("), "clock read"),
    (re.compile(r"\bdate\.today\s*\("), "clock read"),
    (re.compile(r"(?<![\w.])random\.(?!Random\b)\w+\s*\("), "global RNG"),
    (re.compile(r"\bfrom\s+random\s+import\s+(?!Random\b)"), "global RNG import"),
    (
        re.compile(r"\b(np|numpy)\.random\.(?!default_rng\b|Generator\b|SeedSequence\b|PCG64\b)"),
        "global numpy RNG",
    ),
]


def code_only(source: str) -> str:
    """The source with comments and string literals (docstrings included) blanked out."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            continue
        out.append(tok.string)
    return " ".join(out).replace(" . ", ".").replace(" (", "(")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CORE_DIR)))
def test_no_clock_or_global_rng(path: Path) -> None:
    code = code_only(path.read_text(encoding="utf-8"))
    found = [f"{what}: {m.group(0)}" for rx, what in FORBIDDEN for m in rx.finditer(code)]
    assert not found, f"{path.name}: {found}"


@pytest.mark.parametrize(
    ("snippet", "bad"),
    [
        ("t = time.time()", True),
        ("t = time.monotonic_ns()", True),
        ("from time import monotonic", True),
        ("d = datetime.now()", True),
        ("x = random.random()", True),
        ("random.shuffle(xs)", True),
        ("from random import choice", True),
        ("x = np.random.rand(3)", True),
        ("rng = random.Random(7)", False),
        ("rng = np.random.default_rng(7)", False),
        ("x = rng.random()", False),
        ('"""docs may say time.time()"""', False),
        ("# or time.time() in a comment", False),
    ],
)
def test_the_grep_catches_what_it_should(snippet: str, bad: bool) -> None:
    code = code_only(snippet + "\n")
    assert any(rx.search(code) for rx, _ in FORBIDDEN) is bad


# Every import in core, at any depth (a lazy import inside a function included): the core
# itself, numpy, and standard-library modules that do no I/O.  Anything else (the engine
# package's profile loader, yaml, os, pathlib, ...) would let core read files.
ALLOWED_IMPORTS = {
    "__future__",
    "ascendra_proxy.core",
    "bisect",
    "collections",
    "dataclasses",
    "enum",
    "functools",
    "heapq",
    "itertools",
    "math",
    "numpy",
    "operator",
    "types",
    "typing",
}


def imported_modules(source: str) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            names.append(node.module)
    return names


def allowed(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ALLOWED_IMPORTS)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(CORE_DIR)))
def test_core_imports_nothing_that_does_io(path: Path) -> None:
    found = [m for m in imported_modules(path.read_text(encoding="utf-8")) if not allowed(m)]
    assert not found, f"{path.name} imports {found}"


def test_the_import_check_sees_lazy_imports() -> None:
    lazy = "def f():\n    from ascendra_proxy.engine.profile import load_profile\n"
    assert [m for m in imported_modules(lazy) if not allowed(m)] == [
        "ascendra_proxy.engine.profile"
    ]
