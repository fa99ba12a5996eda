"""Batch formation, as vLLM v1's ``Scheduler.schedule()`` does it.

Theory of operation: one call to :meth:`Scheduler.schedule` builds one batch under a token
budget of ``max_num_batched_tokens``:

1. **Running requests first**, in running order.  Each asks for all its pending tokens: one for
   a decode, the rest of the prompt for a request whose prefill was chunked (capped by
   ``long_prefill_token_threshold`` and by the remaining budget).  If the KV cache cannot hold
   them, a victim is preempted by recompute — FCFS: the newest running request (the tail of
   the running list); PRIORITY: the running request with the largest ``(priority, arrival)``
   — its blocks are freed, its computed tokens reset to zero, and it goes back to the waiting
   queue.  If the victim is the request being scheduled, the running pass stops.  A victim that
   was already scheduled in this step is unscheduled and its budget returned.
2. **Then waiting requests**, only if nothing was preempted in this step, while budget and
   ``max_num_seqs`` allow.  The head of the queue gets its prefix-cache hits, then a (possibly
   chunked) prefill of the rest; if its blocks do not fit, admission stops (head-of-line
   blocking, as in vLLM).

The result is a list of ``(sequence, num_new_tokens)`` in batch order plus the preempted ids.
The work is O(running + admitted) per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import EngineConfig
from .kvcache import KVCache
from .queue import WaitingQueue
from .sequence import Sequence, Status


@dataclass(slots=True)
class Batch:
    scheduled: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    newly_scheduled: list[Sequence] = field(default_factory=list)


class Scheduler:
    def __init__(self, config: EngineConfig, kv: KVCache) -> None:
        self.config = config
        self.kv = kv
        self.running: list[Sequence] = []
        self.waiting = WaitingQueue(config.scheduling_policy)
        self._priority = config.scheduling_policy == "priority"
        self.num_preemptions = 0

    def schedule(self) -> Batch:
        batch = Batch()
        budget = self._schedule_running(batch, self.config.max_num_batched_tokens)
        if not batch.preempted:
            self._schedule_waiting(batch, budget)
        return batch

    # ------------------------------------------------------------------ running
    def _schedule_running(self, batch: Batch, budget: int) -> int:
        threshold = self.config.long_prefill_token_threshold
        bs = self.kv.block_size
        scheduled = batch.scheduled
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            n = len(seq.tokens) - seq.num_computed
            if threshold and n > threshold:
                n = threshold
            if n > budget:
                n = budget
            if seq.num_computed + n > len(seq.blocks) * bs and not self.kv.grow(seq, n):
                budget, ok = self._make_room(batch, seq, n, budget)
                if not ok:
                    break
                i = running.index(seq)  # victims before it may have left the list
            scheduled.append((seq, n))
            budget -= n
            i += 1
        return budget

    def _make_room(self, batch: Batch, seq: Sequence, n: int, budget: int) -> tuple[int, bool]:
        """Preempt victims until ``seq`` gets its blocks; (budget, whether seq can run)."""
        while True:
            victim = self._pick_victim()
            budget += self._unschedule(batch, victim)
            self.preempt(victim)
            batch.preempted.append(victim)
            if victim is seq:
                return budget, False
            if self.kv.grow(seq, n):
                return budget, True

    def _pick_victim(self) -> Sequence:
        if self._priority:
            return max(self.running, key=lambda s: (s.priority, s.arrival))
        return self.running[-1]

    @staticmethod
    def _unschedule(batch: Batch, victim: Sequence) -> int:
        for i, (seq, n) in enumerate(batch.scheduled):
            if seq is victim:
                del batch.scheduled[i]
                return n
        return 0

    def preempt(self, seq: Sequence) -> None:
        """Recompute preemption: free the KV, reset progress, requeue."""
        self.running.remove(seq)
        self.kv.release(seq)
        seq.num_computed = 0
        seq.status = Status.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.push_front(seq)

    # ------------------------------------------------------------------ waiting
    def _schedule_waiting(self, batch: Batch, budget: int) -> None:
        cfg = self.config
        threshold = cfg.long_prefill_token_threshold
        kv = self.kv
        while budget > 0 and len(self.running) < cfg.max_num_seqs:
            seq = self.waiting.peek()
            if seq is None:
                break
            hit = kv.lookup(seq.hashes, len(seq.tokens))
            n = len(seq.tokens) - len(hit) * kv.block_size
            if threshold and n > threshold:
                n = threshold
            if n > budget:
                n = budget
            if not kv.admit(seq, hit, n):
                break
            self.waiting.pop()
            seq.status = Status.RUNNING
            self.running.append(seq)
            if not seq.scheduled_once:
                seq.scheduled_once = True
                seq.num_cached_tokens = len(hit) * kv.block_size
                batch.newly_scheduled.append(seq)
            batch.scheduled.append((seq, n))
            budget -= n
