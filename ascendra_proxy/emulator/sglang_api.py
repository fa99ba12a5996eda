"""The SGLang flavour: OpenAI routes, native ``/generate``, ``/abort_request``, server info.

Theory of operation: handlers parse SGLang's request fields into :class:`GenParams` and serve
them through the shared :class:`ServerContext`, with renderers from :mod:`.sglang_render`.
Differences from the vLLM flavour that matter to a proxy:

* the request id is the client's ``rid`` (else a random 32-hex id), and ``/abort_request``
  finds the request by it and ends it with ``finish_reason: "abort"`` at once;
* a client disconnect aborts only after ``sglang_abort_delay_s`` (SGLang's background task);
* ``priority`` counts only with ``--scheduling-policy priority`` (SGLang's
  ``--enable-priority-scheduling``) and then *higher* values go first, unless
  ``sglang_low_priority_values_first``; the engine's lower-first order is reached by negation;
* any ``model`` name is accepted and echoed.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from aiohttp import web

from ascendra_proxy.emulator.config import SGLANG_VERSION, EmulatorConfig
from ascendra_proxy.emulator.errors import APIError, json_response, validation_error
from ascendra_proxy.emulator.params import Fields, GenParams, is_token_list, read_json
from ascendra_proxy.emulator.serving import CTX, ServerContext, collect, pump_sse
from ascendra_proxy.emulator.sglang_render import GenerateRenderer, OpenAIRenderer
from ascendra_proxy.emulator.stream import RequestStream
from ascendra_proxy.emulator.vllm_api import detokenize, health, metrics, resolve_prompt
from ascendra_proxy.emulator.vllm_render import StreamOptions

SETTINGS = web.AppKey("sglang_settings", EmulatorConfig)
RIDS = web.AppKey("sglang_rids", dict[str, RequestStream])


def _engine_priority(app: web.Application, priority: int) -> int:
    cfg = app[SETTINGS]
    if cfg.scheduling_policy != "priority":
        return 0  # SGLang ignores priority unless priority scheduling is enabled
    return priority if cfg.sglang_low_priority_values_first else -priority


def _length_check(ctx: ServerContext, prompt_len: int, max_tokens: int | None) -> int:
    limit = ctx.max_model_len
    if max_tokens is None:
        max_tokens = limit - prompt_len
    if prompt_len + max_tokens > limit or max_tokens < 1:
        raise APIError(
            f"Requested token count exceeds the model's maximum context length of {limit} "
            f"tokens. You requested a total of {prompt_len + max_tokens} tokens: {prompt_len} "
            f"tokens from the input messages and {max_tokens} tokens for the completion. Please "
            "reduce the number of tokens in the input messages or the completion to fit within "
            "the limit.",
            400,
        )
    return max_tokens


def _sampling(
    request: web.Request,
    s: Fields,
    prompt_ids: list[int],
    max_tokens: int | None,
    min_key: str,
    priority: int,
) -> GenParams:
    ctx = request.app[CTX]
    max_tokens = _length_check(ctx, len(prompt_ids), max_tokens)
    return GenParams(
        prompt_ids=prompt_ids,
        max_tokens=max_tokens,
        min_tokens=s.get_int(min_key, 0, minimum=0),
        ignore_eos=s.get_bool("ignore_eos", False),
        stop=s.get_str_list("stop"),
        stop_token_ids=s.get_int_list("stop_token_ids"),
        include_stop_str_in_output=s.get_bool("no_stop_trim", False),
        seed=s.get_opt_int("seed") if "seed" in s.data else s.get_opt_int("sampling_seed"),
        priority=_engine_priority(request.app, priority),
    )


def _new_rid(request: web.Request, f: Fields) -> str:
    rid = f.get_str("rid", None) or uuid.uuid4().hex
    if rid in request.app[RIDS]:
        raise APIError(f"Duplicate request ID: {rid}", 400)
    return rid


async def _start(request: web.Request, rid: str, params: GenParams) -> RequestStream:
    stream = await request.app[CTX].start(rid, params)
    request.app[RIDS][rid] = stream
    return stream


def _forget(request: web.Request, rid: str, stream: RequestStream) -> None:
    """Drop ``rid`` from the registry once its engine request is gone (maybe after the delay)."""
    rids = request.app[RIDS]

    def drop() -> None:
        if rids.get(rid) is stream:
            del rids[rid]

    if stream.done:
        drop()
    else:
        delay = request.app[CTX].abort_delay_s
        asyncio.get_running_loop().call_later(delay + 0.01, drop)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, chat=False)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, chat=True)


async def _openai(request: web.Request, chat: bool) -> web.StreamResponse:
    ctx = request.app[CTX]
    f = Fields(await read_json(request))
    if chat:
        prompt_ids = _chat_prompt(ctx, f)
        max_tokens = f.get_opt_int("max_completion_tokens")
        max_tokens = f.get_opt_int("max_tokens") if max_tokens is None else max_tokens
    else:
        prompt_ids = resolve_prompt(ctx, f.required("prompt"), True)[0]
        max_tokens = f.get_int("max_tokens", 16)
    if f.get_int("n", 1) != 1:
        raise APIError("The emulator supports n=1 only.", 400)
    stream = f.get_bool("stream", False)
    options = Fields(f.get_dict("stream_options"))
    include_usage = options.get_bool("include_usage", False)
    opts = StreamOptions(
        return_token_ids=f.get_bool("return_token_ids", False),
        include_usage=include_usage,
        continuous_usage=include_usage and options.get_bool("continuous_usage_stats", False),
        prompt_tokens_details=ctx.prompt_tokens_details,
    )
    params = _sampling(request, f, prompt_ids, max_tokens, "min_tokens", f.get_int("priority", 0))
    rid = _new_rid(request, f)
    model = f.get_str("model", None) or ctx.model
    renderer = OpenAIRenderer(
        rid, ctx.created_now(), model, prompt_ids, opts, ctx.tokenizer.eos_token_id, chat
    )
    out = await _start(request, rid, params)
    try:
        if stream:
            return await pump_sse(request, ctx, out, renderer.render, lambda: renderer.tail(out))
        deltas = await collect(request, ctx, out)
        return json_response(renderer.body(deltas, out))
    finally:
        _forget(request, rid, out)


def _chat_prompt(ctx: ServerContext, f: Fields) -> list[int]:
    if f.has("input_ids"):
        ids = f.required("input_ids")
        if not is_token_list(ids) or not ids:
            raise validation_error("list_type", "input_ids", "Input should be a valid list", ids)
        ctx.check_token_ids(ids)
        return list(ids)
    messages = f.required("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise validation_error("list_type", "messages", "Input should be a valid list", messages)
    cont = f.get_bool("continue_final_message", False)
    try:
        text = ctx.tokenizer.apply_chat_template(messages, not cont, cont)
    except ValueError as exc:
        raise APIError(str(exc), 400) from None
    return ctx.tokenizer.encode(text, add_special_tokens=False)


async def generate(request: web.Request) -> web.StreamResponse:
    """Native ``/generate``; its errors are ``{"error": {"message": ...}}`` like SGLang's."""
    try:
        return await _generate(request)
    except APIError as err:
        return json_response(orjson.dumps({"error": {"message": err.message}}), err.status)


async def _generate(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    f = Fields(await read_json(request))
    has_text, has_ids = f.has("text"), f.has("input_ids")
    if has_text == has_ids:
        raise APIError("Either text or input_ids should be provided.", 400)
    if has_text:
        prompt_ids = ctx.tokenizer.encode(f.get_str("text", "") or "", add_special_tokens=True)
    else:
        prompt_ids = list(f.required("input_ids"))
        if not is_token_list(prompt_ids) or not prompt_ids:
            raise validation_error(
                "list_type", "input_ids", "Input should be a valid list", prompt_ids
            )
        ctx.check_token_ids(prompt_ids)
    s = Fields(f.get_dict("sampling_params"))
    max_new = s.get_int("max_new_tokens", 128)
    params = _sampling(request, s, prompt_ids, max_new, "min_new_tokens", f.get_int("priority", 0))
    rid = _new_rid(request, f)
    renderer = GenerateRenderer(rid, len(prompt_ids), ctx.tokenizer.eos_token_id)
    out = await _start(request, rid, params)
    try:
        if f.get_bool("stream", False):
            return await pump_sse(request, ctx, out, lambda b: renderer.render(b, out), _done)
        deltas = await collect(request, ctx, out)
        return json_response(renderer.body(deltas, out))
    finally:
        _forget(request, rid, out)


def _done() -> bytes:
    return b"data: [DONE]\n\n"


async def abort_request(request: web.Request) -> web.Response:
    f = Fields(await read_json(request))
    rids = request.app[RIDS]
    loop = request.app[CTX].loop
    now = asyncio.get_running_loop().time()
    targets = list(rids.values()) if f.get_bool("abort_all", False) else []
    rid = f.get_str("rid", None)
    if rid is not None and rid in rids:
        targets.append(rids[rid])
    for stream in targets:
        loop.abort_with_reason(stream, now)
    return web.Response(status=200)


async def server_info(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    cfg = request.app[SETTINGS]
    econf = ctx.loop.engine.stats()
    capacity = econf.num_total_blocks * econf.block_size
    info: dict[str, Any] = {
        "model_path": ctx.model,
        "tokenizer_path": ctx.model,
        "served_model_name": ctx.model,
        "host": cfg.host,
        "port": cfg.port,
        "context_length": ctx.max_model_len,
        "schedule_policy": "fcfs",
        "enable_priority_scheduling": cfg.scheduling_policy == "priority",
        "schedule_low_priority_values_first": cfg.sglang_low_priority_values_first,
        "disable_radix_cache": not cfg.enable_prefix_caching,
        "random_seed": cfg.seed,
        "max_total_num_tokens": capacity,
        "version": SGLANG_VERSION,
        "internal_states": [
            {"memory_usage": {"token_capacity": capacity}, "last_gen_throughput": 0.0}
        ],
    }
    return json_response(orjson.dumps(info))


async def model_info(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = {
        "model_path": ctx.model,
        "tokenizer_path": ctx.model,
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "has_chat_template": True,
    }
    return json_response(orjson.dumps(body))


async def models(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    card = {
        "id": ctx.model,
        "object": "model",
        "created": ctx.created,
        "owned_by": "sglang",
        "root": ctx.model,
        "max_model_len": ctx.max_model_len,
    }
    return json_response(orjson.dumps({"object": "list", "data": [card]}))


def add_routes(app: web.Application, cfg: EmulatorConfig) -> None:
    app[SETTINGS] = cfg
    app[RIDS] = {}
    r = app.router
    r.add_post("/v1/completions", completions)
    r.add_post("/v1/chat/completions", chat_completions)
    r.add_get("/v1/models", models)
    r.add_post("/generate", generate)
    r.add_post("/abort_request", abort_request)
    for path in ("/get_server_info", "/server_info"):
        r.add_get(path, server_info)
    for path in ("/get_model_info", "/model_info"):
        r.add_get(path, model_info)
    r.add_get("/health", health)
    r.add_post("/detokenize", detokenize)
    r.add_get("/metrics", metrics)
