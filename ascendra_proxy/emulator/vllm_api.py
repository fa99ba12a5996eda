"""The vLLM 0.32 flavour: OpenAI routes, vLLM's request extras, errors and side endpoints.

Theory of operation: each generation handler parses the body into :class:`GenParams` plus the
rendering options (:func:`parse_completion`, :func:`parse_chat`), admits it through the
:class:`ServerContext`, and streams or collects the result with a per-request renderer from
:mod:`.vllm_render`.  Validation follows vLLM: ``n`` must be 1 here, ``stream_options`` needs
``stream``, ``priority`` counts only under ``--scheduling-policy priority`` (fcfs accepts and
ignores it, as vLLM 0.32 does), an unknown ``model`` is a 404, and prompts may be text or
token ids (ids are used as-is: no BOS).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ascendra_proxy.emulator.config import VLLM_VERSION
from ascendra_proxy.emulator.errors import APIError, json_response, param_error, validation_error
from ascendra_proxy.emulator.params import Fields, GenParams, is_token_list, read_json
from ascendra_proxy.emulator.serving import CTX, ServerContext, collect, pump_sse
from ascendra_proxy.emulator.vllm_checks import (
    Budget,
    check_sampling,
    check_token_ids,
    no_prompt,
    output_budget,
)
from ascendra_proxy.emulator.vllm_render import ChatRenderer, CompletionRenderer, StreamOptions
from ascendra_proxy.emulator.vllm_responses import responses


@dataclass(slots=True)
class Parsed:
    params: GenParams
    stream: bool
    opts: StreamOptions
    request_id: str


def _ctx(request: web.Request) -> ServerContext:
    return request.app[CTX]


def check_model(ctx: ServerContext, f: Fields) -> None:
    model = f.get_str("model", None)
    if model and model != ctx.model:
        raise APIError(
            f"The model `{model}` does not exist. Valid aliases: {ctx.model}.",
            404,
            param="model",
        )


def resolve_prompt(ctx: ServerContext, prompt: Any, add_special: bool) -> tuple[list[int], str]:
    """Token ids and text of a completions ``prompt`` (text, ids, or a one-element list)."""
    if isinstance(prompt, list) and prompt and not is_token_list(prompt):
        if len(prompt) != 1:
            raise APIError(f"The emulator serves one prompt per request, got {len(prompt)}.")
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise no_prompt()
        return ctx.tokenizer.encode(prompt, add_special_tokens=add_special), prompt
    if is_token_list(prompt):
        check_token_ids(prompt)
        ctx.check_token_ids(prompt)
        return list(prompt), ctx.tokenizer.decode(prompt)
    raise validation_error("string_type", "prompt", "Input should be a valid string", prompt)


def parse_common(
    ctx: ServerContext,
    f: Fields,
    prompt_ids: list[int],
    budget: Budget,
    priority_policy: bool,
) -> tuple[GenParams, bool, StreamOptions]:
    """Sampling and streaming fields shared by completions and chat."""
    if f.get_int("n", 1) != 1:
        raise APIError("The emulator supports n=1 only.", 400, param="n")
    stream = f.get_bool("stream", False)
    options = Fields(f.get_dict("stream_options"))
    if options.data and not stream:
        raise param_error(
            "Stream options can only be defined when `stream=True`.", "stream_options"
        )
    max_tokens = output_budget(ctx.max_model_len, len(prompt_ids), budget)
    min_tokens = f.get_int("min_tokens", 0)
    check_sampling(f, min_tokens, max_tokens)
    # vLLM 0.32 takes ``priority`` under any policy; fcfs simply ignores it (200, no effect).
    priority = f.get_int("priority", 0)  # type-checked under every policy
    if not priority_policy:
        priority = 0
    include_usage = options.get_bool("include_usage", False)
    opts = StreamOptions(
        return_token_ids=f.get_bool("return_token_ids", False),
        include_usage=include_usage,
        continuous_usage=include_usage and options.get_bool("continuous_usage_stats", False),
    )
    params = GenParams(
        prompt_ids=prompt_ids,
        max_tokens=max_tokens,
        min_tokens=min_tokens,
        ignore_eos=f.get_bool("ignore_eos", False),
        stop=f.get_str_list("stop"),
        stop_token_ids=f.get_int_list("stop_token_ids"),
        include_stop_str_in_output=f.get_bool("include_stop_str_in_output", False),
        seed=f.get_opt_int("seed"),
        priority=priority,
    )
    return params, stream, opts


def _request_id(f: Fields, request: web.Request) -> str:
    return (
        f.get_str("request_id", None) or request.headers.get("X-Request-Id") or secrets.token_hex(8)
    )


async def completions(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    f = Fields(await read_json(request))
    check_model(ctx, f)
    prompt = f.data.get("prompt")
    if prompt is None:
        raise no_prompt()
    prompt_ids, prompt_text = resolve_prompt(ctx, prompt, f.get_bool("add_special_tokens", True))
    budget = Budget(f.get_int("max_tokens", 16), text_prompt=not is_token_list(prompt))
    params, stream, opts = parse_common(ctx, f, prompt_ids, budget, ctx.priority_enabled)
    opts = _with_details(ctx, opts)
    rid = "cmpl-" + _request_id(f, request)
    echo = prompt_text if f.get_bool("echo", False) else ""
    renderer = CompletionRenderer(
        rid, ctx.created_now(), ctx.model, ctx.fingerprint, prompt_ids, opts, echo
    )
    return await _serve(request, ctx, rid, params, stream, renderer)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    f = Fields(await read_json(request))
    check_model(ctx, f)
    messages = f.required("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise validation_error("list_type", "messages", "Input should be a valid list", messages)
    if not messages:
        raise APIError(
            "Cannot apply chat template to an empty conversation. Provide at least one message."
        )
    add_gen = f.get_bool("add_generation_prompt", True)
    cont = f.get_bool("continue_final_message", False)
    if add_gen and cont:
        raise APIError(
            "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
        )
    try:
        text = ctx.tokenizer.apply_chat_template(messages, add_gen, cont)
    except ValueError as exc:
        raise APIError(str(exc), 400) from None
    prompt_ids = ctx.tokenizer.encode(
        text, add_special_tokens=f.get_bool("add_special_tokens", False)
    )
    budget = Budget(f.get_opt_int("max_completion_tokens"), "max_completion_tokens")
    if budget.max_tokens is None:
        budget = Budget(f.get_opt_int("max_tokens"))
    params, stream, opts = parse_common(ctx, f, prompt_ids, budget, ctx.priority_enabled)
    opts = _with_details(ctx, opts)
    role = "assistant" if add_gen or not messages else str(messages[-1].get("role", "assistant"))
    rid = "chatcmpl-" + _request_id(f, request)
    renderer = ChatRenderer(
        rid, ctx.created_now(), ctx.model, ctx.fingerprint, prompt_ids, opts, role
    )
    return await _serve(request, ctx, rid, params, stream, renderer)


def _with_details(ctx: ServerContext, opts: StreamOptions) -> StreamOptions:
    if ctx.prompt_tokens_details:
        return opts
    return StreamOptions(opts.return_token_ids, opts.include_usage, opts.continuous_usage, False)


async def _serve(
    request: web.Request,
    ctx: ServerContext,
    rid: str,
    params: GenParams,
    stream: bool,
    renderer: CompletionRenderer | ChatRenderer,
) -> web.StreamResponse:
    out = await ctx.start(rid, params)
    if stream:
        return await pump_sse(request, ctx, out, renderer.render, lambda: renderer.tail(out))
    deltas = await collect(request, ctx, out)
    return json_response(renderer.body(deltas, out))


# ----------------------------------------------------------------- side endpoints
async def models(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    card = {
        "id": ctx.model,
        "object": "model",
        "created": ctx.created,
        "owned_by": "vllm",
        "root": ctx.model,
        "parent": None,
        "max_model_len": ctx.max_model_len,
        "permission": [],
    }
    return json_response(orjson.dumps({"object": "list", "data": [card]}))


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    return json_response(orjson.dumps({"version": VLLM_VERSION}))


async def load(request: web.Request) -> web.Response:
    return json_response(orjson.dumps({"server_load": _ctx(request).loop.num_open_streams}))


async def tokenize(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    f = Fields(await read_json(request))
    if f.has("messages"):
        add_gen = f.get_bool("add_generation_prompt", True)
        cont = f.get_bool("continue_final_message", False)
        try:
            text = ctx.tokenizer.apply_chat_template(f.required("messages"), add_gen, cont)
        except ValueError as exc:
            raise APIError(str(exc), 400) from None
        ids = ctx.tokenizer.encode(text, add_special_tokens=f.get_bool("add_special_tokens", False))
    else:
        prompt = f.get_str("prompt", None)
        if prompt is None:
            raise validation_error("missing", "prompt", "Field required", f.data)
        ids = ctx.tokenizer.encode(
            prompt, add_special_tokens=f.get_bool("add_special_tokens", True)
        )
    body: dict[str, Any] = {"count": len(ids), "max_model_len": ctx.max_model_len, "tokens": ids}
    if f.get_bool("return_token_strs", False):
        body["token_strs"] = [ctx.tokenizer.id_to_piece(t) for t in ids]
    else:
        body["token_strs"] = None
    return json_response(orjson.dumps(body))


async def detokenize(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    f = Fields(await read_json(request))
    tokens = f.required("tokens")
    if not is_token_list(tokens):
        raise validation_error("list_type", "tokens", "Input should be a valid list", tokens)
    ctx.check_token_ids(tokens)
    return json_response(orjson.dumps({"prompt": ctx.tokenizer.decode(tokens)}))


async def metrics(request: web.Request) -> web.Response:
    body = _ctx(request).metrics.render()
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/completions", completions)
    r.add_post("/v1/chat/completions", chat_completions)
    r.add_get("/v1/models", models)
    r.add_get("/health", health)
    r.add_get("/ping", health)
    r.add_get("/version", version)
    r.add_get("/load", load)
    r.add_post("/tokenize", tokenize)
    r.add_post("/detokenize", detokenize)
    r.add_post("/v1/responses", responses)
    r.add_get("/metrics", metrics)
