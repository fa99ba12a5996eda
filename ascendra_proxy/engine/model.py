"""The step-level engine model: vLLM v1 continuous batching in virtual time.

Theory of operation: :class:`EngineModel` owns a :class:`~.scheduler.Scheduler` (running list,
waiting queue, paged KV cache) and a :class:`~.generation.TokenGenerator`.  ``step(now)``

1. forms one batch (running requests first, then admissions from the waiting queue, with
   preemption by recompute when KV blocks run out; see :mod:`.scheduler`),
2. "executes" it: every scheduled request's computed-token count advances by its share of the
   batch; a request whose pending tokens are now all computed samples one new token (so the
   step that finishes a prefill produces the first token, as in vLLM); newly full blocks are
   published to the prefix cache; finished requests release their blocks,
3. prices the batch with the latency profile (optionally with seeded log-normal jitter).

A request whose prompt is still prefilling after a step gets **no** ``TokenOutput`` in that
step.  ``abort`` removes a request at once (its blocks are free before the next step), so a
caller that aborts between steps sees the next batch without it.  The model never reads a
clock: ``now`` is recorded but the caller owns time (the emulator sleeps ``duration_s``, the
simulator schedules an event at ``now + duration_s``).  Randomness comes only from the seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from .config import EngineConfig
from .generation import TokenGenerator, block_hashes, seed_keys
from .kvcache import KVCache
from .profile import LatencyProfile
from .scheduler import Scheduler
from .sequence import Sequence, Status
from .tokenizer import Tokenizer
from .types import EngineRequest, EngineStats, FinishReason, StepResult, TokenOutput

_STOP = FinishReason.STOP
_LENGTH = FinishReason.LENGTH


class EngineModel:
    def __init__(
        self,
        config: EngineConfig,
        profile: LatencyProfile,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer()
        self.config = config.resolve(profile, self.tokenizer.eos_token_id)
        self.profile = profile
        self.seed = seed
        cfg = self.config
        assert cfg.num_gpu_blocks is not None and cfg.eos_token_id is not None
        max_blocks_per_seq = -(-cfg.max_model_len // cfg.block_size)
        if max_blocks_per_seq > cfg.num_gpu_blocks:
            raise ValueError(
                f"max_model_len {cfg.max_model_len} needs {max_blocks_per_seq} KV blocks, "
                f"the cache has {cfg.num_gpu_blocks}"
            )
        self.kv = KVCache(cfg.num_gpu_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self.scheduler = Scheduler(cfg, self.kv)
        vocab = replace(self.tokenizer.generation_vocab(), eos_token_id=cfg.eos_token_id)
        self.generator = TokenGenerator(vocab, cfg.eos_rate, cfg.block_size)
        self._seqs: dict[str, Sequence] = {}
        self._order = 0
        self._rng = random.Random(seed)
        self._jitter = cfg.jitter
        self.last_step_time = 0.0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.num_steps = 0

    # ---------------------------------------------------------------- requests
    def add_request(self, req: EngineRequest) -> None:
        """Queue a request.  Raises ValueError for a duplicate id or an impossible request."""
        if req.request_id in self._seqs:
            raise ValueError(f"request {req.request_id!r} already exists")
        n = len(req.prompt_token_ids)
        if n == 0:
            raise ValueError("the prompt must contain at least one token")
        if n >= self.config.max_model_len:
            raise ValueError(
                f"prompt of {n} tokens does not fit max_model_len {self.config.max_model_len}"
            )
        if req.sampling.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        keys = seed_keys(self.seed, req.sampling.seed)
        h, hashes = block_hashes(req.prompt_token_ids, self.config.block_size)
        pending = self.generator.pending_from_tail(req.prompt_token_ids)
        self._order += 1
        cfg = self.config
        assert cfg.eos_token_id is not None
        seq = Sequence(
            req, self._order, keys, cfg.max_model_len, cfg.eos_token_id, h, hashes, pending
        )
        self._seqs[req.request_id] = seq
        self.scheduler.waiting.push(seq)

    def abort(self, request_id: str) -> bool:
        """Remove a request now; False if it is unknown or already finished."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return False
        if seq.status is Status.RUNNING:
            self.scheduler.running.remove(seq)
            self.kv.release(seq)
        elif seq.status is Status.WAITING:
            self.scheduler.waiting.discard(seq)
            self.kv.release(seq)
        seq.status = Status.ABORTED
        return True

    def has_work(self) -> bool:
        return bool(self.scheduler.running) or len(self.scheduler.waiting) > 0

    def has_request(self, request_id: str) -> bool:
        return request_id in self._seqs

    @property
    def num_free_blocks(self) -> int:
        return self.kv.num_free_blocks

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    def num_computed_tokens(self, request_id: str) -> int:
        return self._seqs[request_id].num_computed

    def reset_prefix_cache(self) -> bool:
        """Forget all cached blocks (vLLM's /reset_prefix_cache); False while blocks are used."""
        return self.kv.reset_prefix_cache()

    # -------------------------------------------------------------------- step
    def step(self, now: float) -> StepResult:
        """Form and execute one batch; see the module docstring."""
        self.last_step_time = now
        batch = self.scheduler.schedule()
        preempted = tuple(s.request_id for s in batch.preempted)
        if not batch.scheduled:
            return StepResult(duration_s=0.0, outputs=(), preempted=preempted)
        self.num_steps += 1
        outputs, finished, shape = self._execute(batch.scheduled)
        self.generation_tokens_total += len(outputs)
        if finished:
            self._finish(finished)
        return StepResult(
            duration_s=self._duration(*shape),
            outputs=tuple(outputs),
            num_prefill_tokens=shape[0],
            num_decode_seqs=shape[1],
            preempted=preempted,
            newly_scheduled=tuple(s.request_id for s in batch.newly_scheduled),
        )

    def _execute(
        self, scheduled: list[tuple[Sequence, int]]
    ) -> tuple[list[TokenOutput], list[Sequence], tuple[int, int, int, float]]:
        """Advance every scheduled sequence; (outputs, finished, (P, D, C, A))."""
        outputs: list[TokenOutput] = []
        finished: list[Sequence] = []
        p_tokens = d_seqs = d_ctx = 0
        attn = 0.0
        bs = self.config.block_size
        sample = self.generator.sample
        register = self.kv.register_full_blocks
        for seq, n in scheduled:
            after = seq.num_computed + n
            seq.num_computed = after
            if after // bs > seq.num_hashed_blocks:
                register(seq)
            tokens = seq.tokens
            if n == 1 and after == len(tokens):
                d_seqs += 1
                d_ctx += after
            else:
                p_tokens += n
                attn += n * (after - n / 2)  # n * (before + n/2)
                if after != len(tokens):
                    continue  # a prefill chunk: no output yet
            tok = sample(seq)
            if tok in seq.finish_ids or len(tokens) >= seq.limit:
                out = self._final_output(seq, tok)
                if out.finish_reason is not None:
                    finished.append(seq)
            elif seq.reported_first:
                out = TokenOutput(seq.request_id, (tok,))
            else:
                out = TokenOutput(seq.request_id, (tok,), None, None, self._first_output(seq))
            outputs.append(out)
        return outputs, finished, (p_tokens, d_seqs, d_ctx, attn)

    def _duration(self, p_tokens: int, d_seqs: int, d_ctx: int, attn: float) -> float:
        duration = self.profile.step_time(p_tokens, d_seqs, d_ctx, attn)
        if self._jitter > 0.0:
            sigma = self._jitter
            duration *= math.exp(self._rng.gauss(0.0, sigma) - sigma * sigma / 2)
        return duration

    def _final_output(self, seq: Sequence, tok: int) -> TokenOutput:
        """Output for a token that may end the request (EOS, stop id, or length)."""
        reason: FinishReason | None = None
        stop_id: int | None = None
        if seq.num_output > seq.min_tokens and tok in seq.finish_ids:
            reason = _STOP
            if tok in seq.stop_ids:
                stop_id = tok
        elif len(seq.tokens) >= seq.limit:
            reason = _LENGTH
        cached = None if seq.reported_first else self._first_output(seq)
        return TokenOutput(seq.request_id, (tok,), reason, stop_id, cached)

    def _first_output(self, seq: Sequence) -> int:
        seq.reported_first = True
        self.prompt_tokens_total += seq.num_prompt
        return seq.num_cached_tokens

    def _finish(self, finished: list[Sequence]) -> None:
        for seq in finished:
            seq.status = Status.FINISHED
            self.kv.release(seq)
            del self._seqs[seq.request_id]
        sched = self.scheduler
        sched.running = [s for s in sched.running if s.status is Status.RUNNING]

    # ------------------------------------------------------------------- stats
    def stats(self) -> EngineStats:
        kv = self.kv
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            kv_usage=kv.usage(),
            num_total_blocks=kv.num_blocks,
            block_size=kv.block_size,
            prefix_cache_queries=kv.queries,
            prefix_cache_hits=kv.hits,
            num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens_total=self.prompt_tokens_total,
            generation_tokens_total=self.generation_tokens_total,
            extra={
                "num_free_blocks": float(kv.num_free_blocks),
                "num_cached_blocks": float(kv.num_cached_blocks),
                "num_steps": float(self.num_steps),
                "prefix_cache_preempted_queries": float(kv.preempted_queries),
                "prefix_cache_preempted_hits": float(kv.preempted_hits),
            },
        )
