"""prefix_aware in the live proxy: token-id prompts that share a prefix follow it."""

from __future__ import annotations

from proxy_stack import MODEL, Stack, make_stack

# 24 blocks of 16 tokens shared by three prompts; the proxy hashes token-id prompts itself.
SHARED = [100 + (i % 500) for i in range(384)]


def _prompts_seen(stack: Stack, name: str) -> int:
    return stack.emulators[name].engine.stats().prefix_cache_queries


async def test_same_prefix_goes_to_the_same_engine_and_hits_its_cache() -> None:
    async with make_stack(("v1", "v2"), policy={"type": "prefix_aware"}) as stack:
        for tail in range(3):
            await stack.client.completions.create(
                model=MODEL, prompt=[*SHARED, tail + 1], max_tokens=2
            )
        queried = {n: _prompts_seen(stack, n) for n in ("v1", "v2")}
        holder = max(queried, key=lambda n: queried[n])
        other = "v2" if holder == "v1" else "v1"
        assert queried[other] == 0  # all three went to one engine
        stats = stack.emulators[holder].engine.stats()
        assert stats.prefix_cache_hits >= 2 * 384  # the 2nd and 3rd reused the shared blocks
