"""A Mooncake-shaped trace made up for tests (the published traces are not in the repo).

Conversations grow turn by turn: each turn resends the conversation so far (its full blocks
repeat; the previous turn's partial last block now holds more tokens, so it gets a new id, as
in the published traces) and adds new blocks; a few requests resend a whole earlier
prompt (a repeated partial last block), and unrelated one-off prompts share only a common
first block (a system prompt), as in the real conversation trace.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["make_rows", "write_trace"]


def make_rows(n: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    next_id = 1  # 0 is the shared system prompt block
    sessions: list[list[int]] = []
    rows: list[dict[str, object]] = []
    t = 0
    for _ in range(n):
        t += rng.randint(0, 900)
        roll = rng.random()
        if roll < 0.1 and rows:  # resend an earlier prompt exactly
            earlier = rng.choice(rows)
            rows.append({**earlier, "timestamp": t, "output_length": rng.randint(1, 50)})
            continue
        if roll < 0.6 and sessions:  # next turn of a conversation
            blocks = rng.choice(sessions)
            if len(blocks) > 1:
                blocks[-1] = next_id  # the partial last block grew: new content, new id
                next_id += 1
        else:
            blocks = [0]
            sessions.append(blocks)
        blocks += list(range(next_id, next_id + rng.randint(1, 4)))
        next_id = blocks[-1] + 1
        last = rng.randint(1, 512)
        rows.append(
            {
                "timestamp": t,
                "input_length": 512 * (len(blocks) - 1) + last,
                "output_length": rng.randint(1, 50),
                "hash_ids": list(blocks),
            }
        )
    return rows


def write_trace(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path
