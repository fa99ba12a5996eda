"""App factory and test helper of the engine emulator.

Theory of operation: :func:`create_app` builds one server from an :class:`EmulatorConfig`: a
tokenizer, the engine model, the step loop, the flavour's metrics and routes, and a fault
injector, all owned by the app (typed app keys, no globals).  The step loop starts and stops
with the app (``cleanup_ctx``); on shutdown every open stream is closed so the server never
waits for clients.  Two middlewares sit in front of every route: the refuse fault (drops the
connection at once, except for the ``/emulator/`` admin routes) and the error mapper (OpenAI
error JSON in the flavour's shape).

Admin routes (both flavours): ``GET /emulator/faults`` reads the fault state; ``POST
/emulator/faults`` with a :class:`FaultConfig` JSON object puts it in force (``{}`` clears
every fault; add ``"crash_now": true`` to crash at once); ``GET /emulator/state`` shows the
engine's counters.

Use from tests (everything on 127.0.0.1 and a free port)::

    from ascendra_proxy.emulator.server import EmulatorConfig, run_emulator

    async with run_emulator(EmulatorConfig(flavor="vllm", time_scale=0.01)) as emu:
        client = openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="x")
        ...
        emu.crash()                      # or: emu.set_faults(FaultConfig(stall_s=1.0))
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
from aiohttp import web

from ascendra_proxy.emulator import sglang_api, vllm_api
from ascendra_proxy.emulator.config import VLLM_VERSION, EmulatorConfig, engine_config
from ascendra_proxy.emulator.detok import PieceTable
from ascendra_proxy.emulator.errors import (
    APIError,
    ConnectionDropped,
    Handler,
    error_middleware,
    json_response,
    sglang_error_body,
    vllm_error_body,
)
from ascendra_proxy.emulator.faults import FaultConfig, FaultInjector, fault_config_from_json
from ascendra_proxy.emulator.metrics import ServerMetrics, SglangMetrics, VllmMetrics
from ascendra_proxy.emulator.runner import StepLoop
from ascendra_proxy.emulator.serving import CTX, ServerContext
from ascendra_proxy.emulator.stream import RequestStream
from ascendra_proxy.engine.model import EngineModel
from ascendra_proxy.engine.tokenizer import Tokenizer
from ascendra_proxy.engine.types import StepResult

__all__ = ["EmulatorConfig", "FaultConfig", "RunningEmulator", "create_app", "run_emulator"]

ADMIN_PREFIX = "/emulator/"
INITIAL_FAULTS = web.AppKey("emulator_initial_faults", FaultConfig)


class _Observer:
    """Step-loop observer: metrics plus the crash-after-tokens counter."""

    def __init__(self, metrics: ServerMetrics, faults: FaultInjector) -> None:
        self._metrics = metrics
        self._faults = faults

    def on_finished(self, stream: RequestStream, now: float) -> None:
        self._metrics.on_finished(stream, now)

    def on_scheduled(self, stream: RequestStream, now: float) -> None:
        self._metrics.on_scheduled(stream, now)

    def on_step(self, result: StepResult, num_tokens: int) -> None:
        self._metrics.on_step(result, num_tokens)
        if num_tokens:
            self._faults.count_tokens(num_tokens)


def build_context(cfg: EmulatorConfig) -> ServerContext:
    profile = cfg.load_profile()
    tokenizer = Tokenizer()
    econf = engine_config(cfg, profile, tokenizer.eos_token_id)
    engine = EngineModel(econf, profile, cfg.seed, tokenizer)
    econf = engine.config
    model = cfg.served_model(profile)
    metrics: ServerMetrics
    if cfg.flavor == "vllm":
        cache_info = {
            "block_size": str(econf.block_size),
            "cache_dtype": "auto",
            "enable_prefix_caching": str(econf.enable_prefix_caching),
            "gpu_memory_utilization": "0.9",
            "num_gpu_blocks": str(econf.num_gpu_blocks),
        }
        metrics = VllmMetrics(model, engine.stats, cache_info, econf.max_model_len)
    else:
        metrics = SglangMetrics(model, engine.stats)
    faults = FaultInjector(cfg.seed, on_crash=lambda: loop.crash())
    loop = StepLoop(engine, cfg.time_scale, _Observer(metrics, faults), faults.stall_remaining)
    return ServerContext(
        model=model,
        max_model_len=econf.max_model_len,
        tokenizer=tokenizer,
        pieces=PieceTable(tokenizer),
        loop=loop,
        metrics=metrics,
        faults=faults,
        frontend_delay_s=profile.frontend_ms / 1000.0 * cfg.time_scale,
        abort_delay_s=cfg.sglang_abort_delay_s if cfg.flavor == "sglang" else 0.0,
        created=ServerContext.created_now(),
        fingerprint=f"vllm-{VLLM_VERSION}-{cfg.seed & 0xFFFFFFFF:08x}",
        prompt_tokens_details=cfg.prompt_tokens_details,
        priority_enabled=cfg.scheduling_policy == "priority",
    )


def create_app(cfg: EmulatorConfig) -> web.Application:
    """An aiohttp app serving one emulated engine (run it with ``handler_cancellation=True``)."""
    ctx = build_context(cfg)
    render = vllm_error_body if cfg.flavor == "vllm" else sglang_error_body
    app = web.Application(middlewares=[error_middleware(render), _refuse_middleware])
    app[CTX] = ctx
    app[INITIAL_FAULTS] = cfg.faults
    if cfg.flavor == "vllm":
        vllm_api.add_routes(app)
    else:
        sglang_api.add_routes(app, cfg)
    app.router.add_get(ADMIN_PREFIX + "faults", _get_faults)
    app.router.add_post(ADMIN_PREFIX + "faults", _post_faults)
    app.router.add_get(ADMIN_PREFIX + "state", _get_state)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_streams)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    ctx.loop.start()
    ctx.faults.apply(app[INITIAL_FAULTS], asyncio.get_running_loop().time())
    yield
    ctx.faults.cancel()
    await ctx.loop.stop()


async def _close_streams(app: web.Application) -> None:
    app[CTX].loop.crash()


@web.middleware
async def _refuse_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    faults = request.app[CTX].faults
    if faults.refusing(asyncio.get_running_loop().time()) and not request.path.startswith(
        ADMIN_PREFIX
    ):
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionDropped
    return await handler(request)


def _fault_state(ctx: ServerContext) -> web.Response:
    state = ctx.faults.state(asyncio.get_running_loop().time())
    return json_response(orjson.dumps(state))


async def _get_faults(request: web.Request) -> web.Response:
    return _fault_state(request.app[CTX])


async def _post_faults(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    try:
        data = orjson.loads(await request.read() or b"{}")
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        crash_now = bool(data.pop("crash_now", False))
        config = fault_config_from_json(data)
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        raise APIError(str(exc), 400) from None
    ctx.faults.apply(config, asyncio.get_running_loop().time())
    if crash_now:
        ctx.faults.crash()
    return _fault_state(ctx)


async def _get_state(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    stats = ctx.loop.engine.stats()
    body = {
        "model": ctx.model,
        "num_running": stats.num_running,
        "num_waiting": stats.num_waiting,
        "kv_usage": stats.kv_usage,
        "num_preemptions": stats.num_preemptions,
        "open_streams": ctx.loop.num_open_streams,
        "generation_tokens_total": stats.generation_tokens_total,
    }
    return json_response(orjson.dumps(body))


@dataclass
class RunningEmulator:
    """A started emulator: ``url`` is ``http://host:port`` (append ``/v1`` for OpenAI clients)."""

    url: str
    host: str
    port: int
    app: web.Application

    @property
    def ctx(self) -> ServerContext:
        return self.app[CTX]

    @property
    def engine(self) -> EngineModel:
        engine = self.ctx.loop.engine
        assert isinstance(engine, EngineModel)
        return engine

    def set_faults(self, config: FaultConfig) -> None:
        self.ctx.faults.apply(config, asyncio.get_running_loop().time())

    def crash(self) -> None:
        self.ctx.faults.crash()


async def start_site(cfg: EmulatorConfig) -> tuple[web.AppRunner, RunningEmulator]:
    app = create_app(cfg)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, RunningEmulator(f"http://{host}:{port}", host, port, app)


@contextlib.asynccontextmanager
async def run_emulator(cfg: EmulatorConfig | None = None) -> AsyncIterator[RunningEmulator]:
    """Serve ``cfg`` (default: vLLM flavour, default profile) until the block exits."""
    runner, running = await start_site(cfg or EmulatorConfig())
    try:
        yield running
    finally:
        await runner.cleanup()
