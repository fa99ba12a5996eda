"""Relayed endpoints and model cards against scripted backends: failover before anything was
sent, the engine's 4xx passed through, cards cached and kept while no engine answers."""

from __future__ import annotations

from fake_backend import FakeBackend
from proxy_rig import MODEL, RigFactory

from ascendra_proxy.proxy.keys import CONTEXT

CARD = {"id": MODEL, "object": "model", "created": 1, "owned_by": "vllm", "max_model_len": 77}


async def test_tokenize_skips_a_failing_backend(make_rig: RigFactory) -> None:
    a, b = FakeBackend("a", tokenize_status=503), FakeBackend("b")
    async with make_rig([a, b]) as r:
        resp = await r.post("/tokenize", {"model": MODEL, "prompt": "hi"})
        assert resp.status == 200
        assert (await resp.json())["backend"] == "b"
        assert r.gateway.telemetry.relayed == {("/tokenize", "completed"): 1}


async def test_an_engines_4xx_is_the_answer(make_rig: RigFactory) -> None:
    a, b = FakeBackend("a", tokenize_status=400), FakeBackend("b", tokenize_status=400)
    async with make_rig([a, b]) as r:
        resp = await r.post("/tokenize", {"model": MODEL, "prompt": "hi"})
        assert resp.status == 400
        assert len(a.bodies) + len(b.bodies) == 1  # not retried
        assert r.gateway.telemetry.relayed == {("/tokenize", "client_error"): 1}


async def test_no_backend_answering_is_a_502(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a", tokenize_status=500)]) as r:
        resp = await r.post("/tokenize", {"model": MODEL, "prompt": "hi"})
        assert resp.status == 502
        assert r.gateway.telemetry.relayed == {("/tokenize", "backend_failed"): 1}


async def test_model_cards_are_the_engines_cached_and_kept(make_rig: RigFactory) -> None:
    fake = FakeBackend("a", model_card=dict(CARD))
    async with make_rig([fake]) as r:
        listing = await (await r.session.get(r.url + "/v1/models")).json()
        assert listing["data"] == [CARD]
        fake.model_card = {**CARD, "max_model_len": 5}
        one = await (await r.session.get(r.url + f"/v1/models/{MODEL}")).json()
        assert one == CARD  # cached
        cards = r.runner.app[CONTEXT].model_cards
        cards[MODEL] = (cards[MODEL][0] - 3600, cards[MODEL][1])  # long expired
        one = await (await r.session.get(r.url + f"/v1/models/{MODEL}")).json()
        assert one["max_model_len"] == 5  # fetched again
        fake.model_card = None  # the engine stops describing it: the last card stays
        cards[MODEL] = (cards[MODEL][0] - 3600, cards[MODEL][1])
        one = await (await r.session.get(r.url + f"/v1/models/{MODEL}")).json()
        assert one["max_model_len"] == 5


async def test_without_an_engine_card_the_card_is_minimal(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")]) as r:
        listing = await (await r.session.get(r.url + "/v1/models")).json()
        (card,) = listing["data"]
        assert card["id"] == MODEL and card["owned_by"] == "ascendra-proxy"
