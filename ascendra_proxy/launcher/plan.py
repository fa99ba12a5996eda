"""Launch planning: a validated proxy config -> the engine containers to start.  Pure.

Theory of operation.  Every backend that names ``gpu_ids`` gets one engine container on
exactly those GPUs (tensor parallel over them when there are several).  The container runs
the real engine (``vllm/vllm-openai``, ``lmsysorg/sglang``) or, with ``emulate``, this
project's emulator speaking the same wire format; either way its engine port is published on
the host at the port of the backend's URL, so the proxy reaches it at the URL the config
already names.  The engine flags come from the backend's ``engine_settings`` (scheduling
policy, batch limits, prefix caching, context length).  Backends without ``gpu_ids`` are
left alone: the proxy uses them as they are.

The plan is a value (:class:`LaunchPlan` of :class:`ContainerSpec`): no Docker, no clock, no
environment reads; the CLI gathers those into :class:`LaunchOptions`.  That keeps the whole
"what would start" question unit-testable, and ``--dry-run`` just renders the plan.
Problems a plan can see (a GPU given to two backends, a URL that is not on this machine, no
port) raise :class:`LaunchError` with a message meant for the user.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ascendra_proxy.config import BackendConfig, EngineSettings, PoolConfig, ProxyConfig

__all__ = [
    "DEFAULT_EMULATOR_IMAGE",
    "DEFAULT_SGLANG_IMAGE",
    "DEFAULT_VLLM_IMAGE",
    "LABEL_BACKEND",
    "LABEL_GPUS",
    "LABEL_MANAGED",
    "LABEL_RUN",
    "ContainerSpec",
    "LaunchError",
    "LaunchOptions",
    "LaunchPlan",
    "Mount",
    "plan_launch",
]

# Pinned engine images; docs/deployment.md explains the pins (same as docker-compose.yml).
DEFAULT_VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
DEFAULT_SGLANG_IMAGE = "lmsysorg/sglang:v0.5.19-cu129"
DEFAULT_EMULATOR_IMAGE = "ascendra-proxy:local"

LABEL_MANAGED = "io.ascendra-proxy.launcher"  # value "1" on every container the launcher starts
LABEL_RUN = "io.ascendra-proxy.run"  # the launch's run id
LABEL_BACKEND = "io.ascendra-proxy.backend"
LABEL_POOL = "io.ascendra-proxy.pool"
LABEL_GPUS = "io.ascendra-proxy.gpus"  # "0,1"

HF_CACHE = "/root/.cache/huggingface"  # where both engine images keep Hugging Face downloads
ENGINE_PORT = {"vllm": 8000, "sglang": 30000}  # the real engines' usual ports
EMULATOR_PORT = 8000
LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1"}


class LaunchError(Exception):
    """A launch cannot go ahead; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    run_id: str
    image_vllm: str = DEFAULT_VLLM_IMAGE
    image_sglang: str = DEFAULT_SGLANG_IMAGE
    emulate: bool = False  # run `ascendra-proxy emulate` instead of the real engine
    emulator_image: str = DEFAULT_EMULATOR_IMAGE
    model_cache: str | None = None  # host directory mounted as the engines' HF cache
    weights: Mapping[str, str] = field(default_factory=dict)  # served name -> HF id or path
    env: Mapping[str, str] = field(default_factory=dict)  # passed to every engine container


@dataclass(frozen=True, slots=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    backend: str
    pool: str
    engine: str  # vllm | sglang (the wire format, also when emulated)
    emulated: bool
    name: str  # container name
    image: str
    entrypoint: str | None  # None: the image's own
    command: tuple[str, ...]
    gpu_ids: tuple[int, ...]
    host_ip: str
    host_port: int
    container_port: int
    environment: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    ipc_host: bool = False

    @property
    def device_ids(self) -> list[str]:
        """GPU ids as Docker's device requests take them."""
        return [str(g) for g in self.gpu_ids]

    @property
    def health_url(self) -> str:
        host = f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip
        return f"http://{host}:{self.host_port}/health"


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    run_id: str
    containers: tuple[ContainerSpec, ...]
    external: tuple[tuple[str, str], ...]  # (backend name, url) of backends left alone
    listen: str  # where the proxy will listen, host:port


def plan_launch(cfg: ProxyConfig, opts: LaunchOptions) -> LaunchPlan:
    """The containers to start for ``cfg``; raises LaunchError if the launch cannot work."""
    _check_gpus_unique(cfg)
    specs: list[ContainerSpec] = []
    external: list[tuple[str, str]] = []
    for pool, backend in cfg.backends():
        if backend.gpu_ids:
            specs.append(_container(pool, backend, opts))
        else:
            external.append((backend.name, backend.url))
    if not specs:
        raise LaunchError(
            "nothing to launch: no backend in the config names gpu_ids (the launcher starts an "
            "engine only for backends with gpu_ids; to proxy running engines use "
            "`ascendra-proxy serve`)"
        )
    listen = f"{cfg.listen.host}:{cfg.listen.port}"
    return LaunchPlan(opts.run_id, tuple(specs), tuple(external), listen)


def _check_gpus_unique(cfg: ProxyConfig) -> None:
    """Config validation already rejects this; the plan re-checks (it may get any config)."""
    owner: dict[int, str] = {}
    for _, backend in cfg.backends():
        for gpu in backend.gpu_ids:
            if gpu in owner:
                raise LaunchError(
                    f"GPU {gpu} is given to two backends ({owner[gpu]} and {backend.name}); "
                    "each engine needs GPUs of its own"
                )
            owner[gpu] = backend.name


def _host_and_port(backend: BackendConfig) -> tuple[str, int]:
    parts = urlsplit(backend.url)
    host = (parts.hostname or "").lower()
    if host not in LOOPBACK:
        raise LaunchError(
            f"backend {backend.name}: url {backend.url} is not on this machine; the launcher "
            "starts engines locally and publishes them on 127.0.0.1 (use http://127.0.0.1:PORT)"
        )
    if parts.scheme != "http" or parts.port is None or parts.path not in ("", "/"):
        raise LaunchError(
            f"backend {backend.name}: url {backend.url} must be http://127.0.0.1:PORT with an "
            "explicit port and no path (the launcher publishes the engine on that port)"
        )
    return LOOPBACK[host], parts.port


@dataclass(frozen=True, slots=True)
class _Runtime:
    """The engine-specific part of a container: what runs, and on which port inside."""

    image: str
    entrypoint: str | None
    command: tuple[str, ...]
    port: int
    mounts: tuple[Mount, ...] = ()
    ipc_host: bool = False


def _runtime(backend: BackendConfig, opts: LaunchOptions) -> _Runtime:
    if opts.emulate:
        return _Runtime(opts.emulator_image, None, _emulator_command(backend), EMULATOR_PORT)
    source = opts.weights.get(backend.model, backend.model)
    mounts = (Mount(opts.model_cache, HF_CACHE),) if opts.model_cache else ()
    # ipc_host: both engines' docs ask for it (PyTorch shares memory between processes).
    if backend.engine == "vllm":
        command = _vllm_command(backend, source)
        return _Runtime(opts.image_vllm, None, command, ENGINE_PORT["vllm"], mounts, True)
    command = _sglang_command(backend, source)
    return _Runtime(opts.image_sglang, "python3", command, ENGINE_PORT["sglang"], mounts, True)


def _container(pool: PoolConfig, backend: BackendConfig, opts: LaunchOptions) -> ContainerSpec:
    host_ip, host_port = _host_and_port(backend)
    rt = _runtime(backend, opts)
    labels = (
        (LABEL_MANAGED, "1"),
        (LABEL_RUN, opts.run_id),
        (LABEL_BACKEND, backend.name),
        (LABEL_POOL, pool.name),
        (LABEL_GPUS, ",".join(str(g) for g in backend.gpu_ids)),
    )
    return ContainerSpec(
        backend=backend.name,
        pool=pool.name,
        engine=backend.engine,
        emulated=opts.emulate,
        name=f"ascendra-{backend.name}-{opts.run_id}",
        image=rt.image,
        entrypoint=rt.entrypoint,
        command=rt.command,
        gpu_ids=backend.gpu_ids,
        host_ip=host_ip,
        host_port=host_port,
        container_port=rt.port,
        environment=tuple(sorted(opts.env.items())),
        mounts=rt.mounts,
        labels=labels,
        ipc_host=rt.ipc_host,
    )


def _vllm_command(b: BackendConfig, source: str) -> tuple[str, ...]:
    s = b.engine_settings
    args = [
        "--model", source,
        "--served-model-name", b.model,
        "--host", "0.0.0.0",
        "--port", str(ENGINE_PORT["vllm"]),
        "--scheduling-policy", s.scheduling_policy,
        "--enable-prefix-caching" if s.enable_prefix_caching else "--no-enable-prefix-caching",
        "--max-num-seqs", str(s.max_num_seqs),
        "--max-num-batched-tokens", str(s.max_num_batched_tokens),
        "--max-model-len", str(s.max_model_len),
        "--block-size", str(s.block_size),
    ]  # fmt: skip
    if s.num_gpu_blocks is not None:
        args += ["--num-gpu-blocks-override", str(s.num_gpu_blocks)]
    if len(b.gpu_ids) > 1:
        args += ["--tensor-parallel-size", str(len(b.gpu_ids))]
    return tuple(args)


def _sglang_command(b: BackendConfig, source: str) -> tuple[str, ...]:
    s = b.engine_settings
    args = [
        "-m", "sglang.launch_server",
        "--model-path", source,
        "--served-model-name", b.model,
        "--host", "0.0.0.0",
        "--port", str(ENGINE_PORT["sglang"]),
        "--enable-metrics",
        "--max-running-requests", str(s.max_num_seqs),
        "--chunked-prefill-size", str(s.max_num_batched_tokens),
        "--context-length", str(s.max_model_len),
    ]  # fmt: skip
    if s.scheduling_policy == "priority":
        # SGLang's default order (higher value first): the proxy's SGLang adapter sends
        # priorities in that convention, so the engine keeps its default.
        args += ["--enable-priority-scheduling"]
    if not s.enable_prefix_caching:
        args.append("--disable-radix-cache")
    if len(b.gpu_ids) > 1:
        args += ["--tp-size", str(len(b.gpu_ids))]
    return tuple(args)


def _emulator_command(b: BackendConfig) -> tuple[str, ...]:
    s: EngineSettings = b.engine_settings
    args = [
        "emulate",
        "--flavor", b.engine,
        "--model", b.model,
        "--host", "0.0.0.0",
        "--port", str(EMULATOR_PORT),
        "--scheduling-policy", s.scheduling_policy,
        "--max-num-seqs", str(s.max_num_seqs),
        "--max-num-batched-tokens", str(s.max_num_batched_tokens),
        "--block-size", str(s.block_size),
        "--max-model-len", str(s.max_model_len),
    ]  # fmt: skip
    if s.profile:
        args += ["--profile", s.profile]
    if s.num_gpu_blocks is not None:
        args += ["--num-gpu-blocks", str(s.num_gpu_blocks)]
    if not s.enable_prefix_caching:
        args.append("--no-prefix-caching")
    return tuple(args)
