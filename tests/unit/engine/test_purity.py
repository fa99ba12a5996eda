"""engine/ is pure: it runs with asyncio, aiohttp and time unimportable, and reads no clock,
no global RNG and no salted ``hash()`` (code tokens of every engine module are searched)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import ascendra_proxy.engine

ENGINE_DIR = Path(ascendra_proxy.engine.__file__).parent

SCRIPT = r"""
import sys
# PyYAML (profile loading) is an allowed dependency whose datetime support imports time,
# and so is the standard library's package-data reader (importlib.resources imports
# zipfile); load them before the block, the rule is about the engine's own code.
import yaml
import importlib.readers
BLOCKED = {"asyncio", "aiohttp", "time"}
for name in list(sys.modules):
    if name.split(".")[0] in BLOCKED:
        del sys.modules[name]

class Blocker:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"engine must not import {name}")
        return None

sys.meta_path.insert(0, Blocker)
from ascendra_proxy.engine import (
    EngineConfig, EngineModel, EngineRequest, SamplingSpec, load_profile,
)
engine = EngineModel(EngineConfig(jitter=0.1), load_profile("a100-llama3-8b"), seed=1)
engine.add_request(EngineRequest("r", list(range(1, 100)), SamplingSpec(max_tokens=5), 0.0))
while engine.has_work():
    engine.step(0.0)
leaked = sorted(n for n in sys.modules if n.split(".")[0] in BLOCKED)
assert not leaked, leaked
print("ok")
"""

FORBIDDEN = re.compile(
    r"\b(time|datetime)\.\w+|\brandom\.(random|randint|choice|choices|gauss|seed|shuffle)\b"
    r"|\bhash\("
)


def test_engine_runs_without_asyncio_or_time() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def code_text(path: Path) -> str:
    """The source without comments and strings."""
    keep = []
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
    for tok in tokens:
        if tok.type not in (tokenize.COMMENT, tokenize.STRING):
            keep.append(tok.string)
    return " ".join(keep).replace(" . ", ".").replace(" (", "(")


def test_no_clock_reads_global_rng_or_salted_hash() -> None:
    offenders = {}
    for path in sorted(ENGINE_DIR.glob("*.py")):
        found = FORBIDDEN.findall(code_text(path))
        if found:
            offenders[path.name] = found
    assert offenders == {}
