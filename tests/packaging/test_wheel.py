"""A wheel that works outside the checkout: built, installed in a fresh venv, run.

The wheel is built from a copy of only what the Dockerfile copies (``pyproject.toml``,
``README.md``, the two packages), so it cannot lean on other files of the repository, and
installed into a fresh virtualenv.  Its runtime dependencies come, offline, from the
packages of the project's own venv: exactly the closure of what the wheel's metadata
declares (dev tools and undeclared packages stay invisible), linked into a directory the
fresh venv sees through a ``.pth`` file.  The commands then run from an empty directory:
``ascendra-proxy emulate --profile a100-llama3-8b`` must serve ``/health`` and
``ascendra-proxy simulate`` must run a small named workload, which needs the packaged
latency profile and the packaged workload parameters.
"""

from __future__ import annotations

import email
import importlib.metadata as md
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "ascendra_proxy", "loadgen")
PACKAGE_DATA = (
    "ascendra_proxy/py.typed",
    "ascendra_proxy/data/profiles/a100-llama3-8b.yaml",
    "loadgen/py.typed",
    "loadgen/data/workloads.yaml",
)
STEP_TIMEOUT_S = 180


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # empty directory the commands run in
    env: dict[str, str]

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT_S,
        )


def _check(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{done.args}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    dist = tmp / "dist"
    # The dev extras carry the build backend, so the build needs no index.
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    argv = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist)]
    _check(subprocess.run([*argv, str(src)], capture_output=True, text=True, timeout=300))
    [wheel] = dist.glob("ascendra_proxy-*.whl")
    return wheel


def _declared_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        [meta] = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        message = email.message_from_bytes(zf.read(meta))
    return list(message.get_all("Requires-Dist") or [])


def _closure(requirements: list[str]) -> dict[str, md.Distribution]:
    """The installed distributions ``requirements`` need, transitively (no extras)."""
    found: dict[str, md.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = canonicalize_name(req.name)
        if key in found:
            continue
        dist = md.distribution(req.name)  # PackageNotFoundError: the dev venv lacks it
        found[key] = dist
        todo += dist.requires or []
    return found


def _link_dependencies(requirements: list[str], target: Path) -> int:
    """Symlink every top-level file and folder of the closure's distributions into ``target``."""
    target.mkdir()
    dists = _closure(requirements)
    for dist in dists.values():
        site = Path(str(dist.locate_file("")))
        tops = {Path(f).parts[0] for f in dist.files or [] if Path(f).parts[0] != ".."}
        for top in tops:
            link = target / top
            if not link.exists() and (site / top).exists():
                link.symlink_to(site / top)
    return len(dists)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp)
    venv = tmp / "venv"
    _check(
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python"]
    argv = [*pip, str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel)]
    _check(subprocess.run(argv, capture_output=True, text=True, timeout=300))
    assert _link_dependencies(_declared_requirements(wheel), tmp / "deps") >= 5
    [site] = (venv / "lib").glob("python3*/site-packages")
    (site / "runtime_dependencies.pth").write_text(f"{tmp / 'deps'}\n")
    workdir = tmp / "work"
    workdir.mkdir()
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "ASCENDRA_PROFILE_PATH")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    yield Installed(wheel, venv, workdir, env)


def test_the_wheel_carries_the_package_data(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as zf:
        names = set(zf.namelist())
    assert set(PACKAGE_DATA) <= names
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("ascendra_proxy/data/profiles/")}
    in_tree = {p.name for p in (REPO / "ascendra_proxy" / "data" / "profiles").iterdir()}
    assert shipped == {n for n in in_tree if n.endswith((".yaml", ".yml"))}


def test_the_venv_imports_the_installed_wheel_not_the_checkout(installed: Installed) -> None:
    code = "import ascendra_proxy, loadgen; print(ascendra_proxy.__file__, loadgen.__file__)"
    paths = _check(installed.run(installed.bin("python"), "-c", code)).stdout.split()
    assert all(Path(p).is_relative_to(installed.venv) for p in paths), paths


def test_emulate_serves_health_with_a_packaged_profile(installed: Installed) -> None:
    argv = [installed.bin("ascendra-proxy"), "emulate", "--profile", "a100-llama3-8b"]
    proc = subprocess.Popen(
        [*argv, "--host", "127.0.0.1", "--port", "0"],
        cwd=installed.workdir,
        env=installed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = _listening_url(proc, within_s=STEP_TIMEOUT_S)
        with urllib.request.urlopen(url + "/health", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(url + "/v1/models", timeout=10) as resp:
            [model] = json.loads(resp.read())["data"]
        assert model["id"] == "a100-llama3-8b"  # default served name: the profile's
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _listening_url(proc: subprocess.Popen[str], within_s: float) -> str:
    """The URL of the emulator's ``listening on URL`` line (its stderr if it exits first)."""
    assert proc.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=within_s)
        except queue.Empty:
            pytest.fail(f"the emulator printed no 'listening on' line within {within_s:.0f} s")
        if line is None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"the emulator exited ({proc.wait()}) before listening:\n{err[-3000:]}")
        if line.startswith("listening on "):
            return line.removeprefix("listening on ").strip()


def test_simulate_runs_a_named_workload(installed: Installed) -> None:
    engine = {"profile": "a100-llama3-8b", "scheduling_policy": "priority"}

    def backend(name: str) -> dict[str, object]:
        url = f"http://{name}.sim:8000"
        return {"url": url, "engine": "vllm", "model": "m", "engine_settings": engine}

    config = {
        "pools": [
            {"name": "lp", "role": "lp", "backends": [backend("lp-0"), backend("lp-1")]},
            {"name": "hp", "role": "hp", "backends": [backend("hp-0")]},
        ],
        "slo": {"default": {"ttft_ms": 1000, "tpot_ms": 150}},
        "policy": {"type": "ascendra"},
    }
    (installed.workdir / "sim.yaml").write_text(yaml.safe_dump(config))
    argv = ["simulate", "--config", "sim.yaml", "--workload", "azure-conv", "--rate", "4"]
    argv += ["--num-requests", "30", "--out", "run.json"]
    _check(installed.run(installed.bin("ascendra-proxy"), *argv))
    doc = json.loads((installed.workdir / "run.json").read_text())
    assert doc["summary"]["total"] == 30
    assert doc["summary"]["completed"] == 30
