"""The Anthropic Messages API computer-use loop.

One flat loop driven by the checkpointed state: if an action was in flight
when the process died, answer it as interrupted; if tool_use blocks are
unanswered, run them; if the model has finished, stop; else call the model.
Because every decision reads only the state, a fresh process resumes exactly
where the last checkpoint left off.

State layout (JSON, what `ctx.checkpoint` stores):
    messages      the transcript; content always a block list, screenshots as
                  {"type": "image", "source": {"type": "screenshot_ref", "id"}};
                  thinking blocks kept exactly as received
    run_id        the run the counters below belong to
    next_turn     0-based index of this run's next model call (= turns taken)
    stop_reason   stop_reason of the last response
    in_flight     {call_id, turn, action} while an action executes, else None
    awaiting      the call_id whose safety checks wait for a human, else None
    current_turn  the TurnRecord fields of a turn whose tool calls are not all
                  answered yet (re-recorded with its results when they are)
    last_shot     the newest screenshot (StoredShot.to_event()) or None
    continued     True after asking the model to continue past max_tokens
    halted        {stop_reason, message} once a safety check stopped the run
    failed        {type, message} once the model's reply failed the run (max_tokens
                  twice, context window exceeded, an answer still invalid against the
                  run's output_schema after its repair turn)
    output_repairs  repair turns asked for this run's structured answer (structured.py)
    Both markers are written in the checkpoint that decides them, so a resumed run
    ends the same way without calling the model; a new run clears them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from anthropic import AsyncAnthropic

from app.agents import anthropic_transcript as tx
from app.agents.anthropic_run import AnthropicRun
from app.agents.base import RunContext, RunOutcome, snapshot

STATE_VERSION = 1


def new_state() -> dict[str, Any]:
    """The state of a session that has never run."""
    return {
        "version": STATE_VERSION,
        "messages": [],
        "run_id": None,
        "next_turn": 0,
        "stop_reason": None,
        "in_flight": None,
        "awaiting": None,
        "current_turn": None,
        "last_shot": None,
        "continued": False,
        "halted": None,
        "failed": None,
        "output_repairs": 0,
    }


class AnthropicLoop:
    """AgentLoop for Anthropic computer use (beta computer tools and the GA toolset).

    `client` is shared and built elsewhere with max_retries=0: the runner's
    `call_provider` does the retries. `image_chunk` overrides how many old
    screenshots are dropped at once (default: image_retention, capped so a
    request never carries more than 100 images); `today` feeds the date in the
    system prompt.
    """

    def __init__(
        self,
        client: AsyncAnthropic,
        *,
        image_chunk: int | None = None,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.client = client
        self.image_chunk = image_chunk
        self.today = today

    async def run(
        self, ctx: RunContext, state: dict[str, Any], user_input: str | None, *, resumed: bool
    ) -> RunOutcome:
        # The loop works on its own copy; the caller's dict is never changed.
        run = AnthropicRun(
            self.client,
            ctx,
            {**new_state(), **snapshot(state)},
            image_chunk=self.image_chunk,
            today=self.today(),
        )
        return await run.drive(user_input, resumed=resumed)

    def repair(self, state: dict[str, Any], reason: str) -> dict[str, Any]:
        """Answer every unanswered tool_use with is_error `reason`; pure, no I/O."""
        repaired = {**new_state(), **snapshot(state)}
        repaired["messages"] = tx.repair_messages(repaired["messages"], reason)
        repaired["in_flight"] = None
        repaired["awaiting"] = None
        repaired["current_turn"] = None
        repaired["halted"] = None
        repaired["failed"] = None
        return repaired
