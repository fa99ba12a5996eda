"""Two workers, two schedulers with a Redis lease, emulated engines: the split for real.

Every wait is on a condition (a scheduler's ``/ready``, a dispatch log, a response), with
generous bounds; nothing depends on how fast a loaded machine runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from split_stack import MODEL, Proc, SplitStack, complete, free_port, split_stack, until

pytestmark = pytest.mark.slow


async def _two_workers(s: SplitStack, n_schedulers: int) -> tuple[list, list]:
    scheds = [s.scheduler(f"sched-{chr(97 + i)}") for i in range(n_schedulers)]
    workers = [s.worker(f"worker-{i}", scheds) for i in range(2)]
    for w in workers:
        await s.worker_up(w)
    leader = None

    async def someone_leads() -> bool:
        nonlocal leader
        for sc in scheds:
            body = await s.ready(sc)
            if body is not None and len(body["workers"]) == 2:
                leader = sc
                return True
        return False

    await until("a scheduler leads both workers", someone_leads)
    scheds.remove(leader)
    return [leader, *scheds], workers


async def test_held_requests_bind_in_deadline_order_across_both_workers(
    tmp_path: Path, redis_url: str
) -> None:
    # LP only, one sequence per engine: two blockers fill it, six requests wait
    async with split_stack(tmp_path, redis_url, hp=(), time_scale=1.0, max_num_seqs=1) as s:
        (leader, _standby), workers = await _two_workers(s, 2)
        blockers = [asyncio.create_task(complete(s, workers[0].url, 4000)) for _ in range(2)]
        await until("both blockers run", lambda: _count(s, leader, "requests", 2, held=0))
        slos = [50_000, 20_000, 60_000, 30_000, 40_000, 10_000]  # TTFT SLOs (ms), shuffled
        waiting = []
        for i, slo in enumerate(slos):
            base = workers[i % 2].url
            headers = {"x-slo-ttft-ms": str(slo)}
            waiting.append(asyncio.create_task(complete(s, base, 4, headers, stream=False)))
            await until(f"request {i} held", lambda n=i + 1: _count(s, leader, "held", n))
        for b in blockers:
            b.cancel()
        results = await asyncio.gather(*waiting)
        assert all(r[0] == 200 and r[1] == 4 for r in results), results
        log = await s.dispatches(leader)
        held = [d for d in log if d["reason"] == "lp_room"][-len(slos) :]
        deadlines = [d["ttft_deadline"] for d in held]
        assert deadlines == sorted(deadlines), held
        assert len({d["worker"] for d in held}) == 2  # both workers' requests, one queue


async def _count(s: SplitStack, sched: object, key: str, n: int, **also: int) -> bool:
    body = await s.ready(sched)  # type: ignore[arg-type]
    if body is None or body.get(key) != n:
        return False
    return all(body.get(k) == v for k, v in also.items())


async def test_the_standby_takes_over_and_no_request_is_lost(
    tmp_path: Path, redis_url: str
) -> None:
    async with split_stack(tmp_path, redis_url) as s:
        (leader, standby), _workers = await _two_workers(s, 2)
        old_epoch = (await s.ready(leader) or {})["epoch"]
        results: list[tuple[int, int, str]] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                results.append(await complete(s, s.url, 12))

        load = [asyncio.create_task(client()) for _ in range(4)]
        await until("load runs", lambda: _at_least(results, 8))
        leader.kill()
        body = await s.leading(standby, workers=2)
        assert body["epoch"] > old_epoch
        served = len(results)
        await until(
            "requests complete under the new leader", lambda: _at_least(results, served + 8)
        )
        stop.set()
        await asyncio.gather(*load)
        assert results and all(r == (200, 12, "length") for r in results), results
        routed = await s.metric(standby, "ascendra_scheduler_messages_total", 'type="RouteAsk"')
        assert routed > 0  # the new leader decided requests


async def _at_least(items: list, n: int) -> bool:
    return len(items) >= n


async def test_workers_fail_open_while_no_scheduler_answers(tmp_path: Path) -> None:
    async with split_stack(tmp_path, None) as s:
        (sched,), workers = await _two_workers(s, 1)
        before = await s.metric(workers[0], "ascendra_decisions_total", 'reason="lp_priority"')
        sched.kill()
        for w in workers:  # every worker serves, without a scheduler
            results = await asyncio.gather(*(complete(s, w.url, 6) for _ in range(3)))
            assert all(r == (200, 6, "length") for r in results), results
        after = await s.metric(workers[0], "ascendra_decisions_total", 'reason="lp_priority"')
        local = await s.metric(workers[0], "ascendra_decisions_total", 'reason="hp_ticket"')
        assert after + local > before  # routed by the local engine-priority policy
        again = s.scheduler("sched-b", port=sched.port)  # a new scheduler at the same address
        await s.leading(again, workers=2)
        assert (await complete(s, workers[1].url, 6)) == (200, 6, "length")
        assert await s.metric(again, "ascendra_scheduler_messages_total", 'type="RouteAsk"') > 0


async def test_a_dead_worker_loses_only_its_own_streams(tmp_path: Path) -> None:
    async with split_stack(tmp_path, None) as s:
        (sched,), (doomed, survivor) = await _two_workers(s, 1)
        long = 400  # tokens: the streams outlive the kill
        seen: list[list[int]] = [[], [], [], []]
        mine = [
            asyncio.create_task(_stream_or_error(s, doomed.url, long, seen[i])) for i in range(2)
        ]
        theirs = [
            asyncio.create_task(complete(s, survivor.url, long, seen=seen[i])) for i in (2, 3)
        ]
        await until("four streams have tokens", lambda: _at_least_each(seen, 1))
        doomed.kill()
        lost = await asyncio.gather(*mine)
        assert all(r != (200, long, "length") for r in lost), lost
        kept = await asyncio.gather(*theirs)
        assert all(r == (200, long, "length") for r in kept), kept
        body = await s.leading(sched, workers=1)
        assert body["requests"] == 0  # the dead worker's requests were dropped, not leaked
        assert (await complete(s, s.url, 4)) == (200, 4, "length")


async def _at_least_each(lists: list[list[int]], n: int) -> bool:
    return all(len(x) >= n for x in lists)


async def _stream_or_error(
    s: SplitStack, base: str, n: int, seen: list[int]
) -> tuple[int, int, str]:
    try:
        return await complete(s, base, n, seen=seen)
    except Exception as exc:  # the connection dies with its worker
        return 0, 0, type(exc).__name__


async def test_serve_workers_runs_a_local_scheduler_and_shares_the_port(tmp_path: Path) -> None:
    async with split_stack(tmp_path, None, hp=()) as s:
        private = free_port()
        args = ["serve", "--workers", "2", "--host", "127.0.0.1", "--port", str(s.port)]
        sup = s._spawn("supervisor", [*args, "--worker-port-base", str(private)], private)
        w0, w1 = (Proc(f"w{i}", sup.popen, private + i, sup.log) for i in range(2))
        for w in (w0, w1):
            await s.worker_up(w)
        results = await asyncio.gather(*(complete(s, s.url, 4) for _ in range(16)))
        assert all(r == (200, 4, "length") for r in results), results
        served = [
            await s.metric(w, "ascendra_requests_total", f'model="{MODEL}",outcome="completed"')
            for w in (w0, w1)
        ]
        assert sum(served) == 16
        waits = [
            await s.metric(w, "ascendra_decisions_total", 'reason="scheduler_wait"')
            for w in (w0, w1)
        ]
        assert sum(waits) >= 16  # decided by the scheduler, not failing open
        # a worker that dies is started again; its sibling serves meanwhile
        first = _serving_children(sup.popen.pid)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        await until("the supervisor restarts the worker", lambda: _replaced(sup.popen.pid, first))
        for w in (w0, w1):
            await s.worker_up(w)
        await s.http.close()  # pooled connections may lead to the dead worker
        s.http = aiohttp.ClientSession()
        results = await asyncio.gather(*(complete(s, s.url, 4) for _ in range(8)))
        assert all(r == (200, 4, "length") for r in results), results


def _serving_children(pid: int) -> list[int]:
    """The supervisor's worker processes (its children running ``serve``)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = [int(k) for k in f.read().split()]
    out = []
    for k in kids:
        try:
            with open(f"/proc/{k}/cmdline", "rb") as f:
                if b"\0serve\0" in f.read():
                    out.append(k)
        except FileNotFoundError:
            continue
    return sorted(out)


async def _replaced(pid: int, before: list[int]) -> bool:
    now = _serving_children(pid)
    return len(now) == len(before) and now != before
