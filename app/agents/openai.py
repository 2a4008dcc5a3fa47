"""The OpenAI Responses API computer-use loop.

One flat loop driven by the checkpointed state, like the Anthropic loop: a
halted run stays halted; an action in flight when the process died is
answered as interrupted; an unanswered computer_call is cleared (safety
checks), run and answered; a finished model stops the run; else the model is
called. Tools: `computer_use_preview` (one `action` per call) for
computer-use-preview models, the GA `computer` tool (batched `actions`) for
every other model (gpt-5.4 and later); `options.tool_version` overrides.

Chaining and its fallback:
    Each request chains on the newest stored response whose conversation is
    still a prefix of ours (`previous_response_id`) and sends only the items
    after it: within a run and across runs of the session. Every item is
    resent, unchained, when (a) the state has no such response (a new
    session; after a call was dropped from the session's first response; after
    a previous fallback's response was lost), or (b) the API answers 404 to a
    chained request (the stored response expired or was deleted): then the
    request is sent again at once without `previous_response_id`. Reasoning
    items go back with their encrypted content, each followed by the item
    that followed it; older screenshots beyond `image_retention` become
    placeholders in such a resend.

Calls that are never answered (rejected or expired safety checks, a refusal,
a truncated call, a cancel before the call started): the call and the
reasoning item before it leave the conversation, so the next request branches
from the response before (PROVIDERS.md), and a note tells the model why.

State layout (JSON, what `ctx.checkpoint` stores):
    items            the conversation as Responses input items, oldest first
                     (openai_items.py); screenshots as {"screenshot_ref": id}
    marks            [{response_id, end}]: stored responses whose conversation is
                     items[:end], newest last; [] = resend everything
    run_id           the run the counters below belong to
    next_turn        0-based index of this run's next model call (= turns taken)
    stop_reason      of the last response (see openai_events.py)
    in_flight        {call_id, turn, index, action} while an action executes
    awaiting         the call_id whose safety checks wait for a human, else None
    progress         {call_id, done, acks, announced} of the call being run: actions
                     done so far, the provider checks to acknowledge in its output
    current_turn     the TurnRecord fields of a turn whose calls are not all answered
    last_shot        the newest screenshot (StoredShot.to_event()) or None
    needs_screenshot the next run starts with a fresh screenshot (after a repair)
    continued        True after asking the model to continue an incomplete reply
    halted           {stop_reason, message} once a safety check stopped the run
    failed           {type, message} once the run failed for good (cut short twice, an
                     answer still invalid against the run's output_schema after its repair)
    output_repairs   repair turns asked for this run's structured answer (structured.py)
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from openai import AsyncOpenAI

from app.agents.base import RunContext, RunOutcome, snapshot
from app.agents.openai_repair import repair_calls
from app.agents.openai_run import OpenAIRun
from app.agents.openai_tools import DEFAULT_WAIT_SECONDS

STATE_VERSION = 1


def new_state() -> dict[str, Any]:
    """The state of a session that has never run."""
    return {
        "version": STATE_VERSION,
        "items": [],
        "marks": [],
        "run_id": None,
        "next_turn": 0,
        "stop_reason": None,
        "in_flight": None,
        "awaiting": None,
        "progress": None,
        "current_turn": None,
        "last_shot": None,
        "needs_screenshot": False,
        "continued": False,
        "halted": None,
        "failed": None,
        "output_repairs": 0,
    }


class OpenAILoop:
    """AgentLoop for OpenAI computer use (computer_use_preview and the GA computer tool).

    `client` is shared and built elsewhere with max_retries=0: the runner's
    `call_provider` does the retries. `wait_seconds` is how long the wire `wait`
    action (which has no duration) waits; `today` feeds the date in the prompt.
    """

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.client = client
        self.wait_seconds = wait_seconds
        self.today = today

    async def run(
        self, ctx: RunContext, state: dict[str, Any], user_input: str | None, *, resumed: bool
    ) -> RunOutcome:
        # The loop works on its own copy; the caller's dict is never changed.
        run = OpenAIRun(
            self.client,
            ctx,
            {**new_state(), **snapshot(state)},
            wait_seconds=self.wait_seconds,
            today=self.today(),
        )
        return await run.drive(user_input, resumed=resumed)

    def repair(self, state: dict[str, Any], reason: str) -> dict[str, Any]:
        """Leave no computer_call unanswered; pure, no I/O. A call that never started is
        dropped (the next request branches from the response before it); one that
        started is answered with the last screenshot. See openai_repair.py."""
        repaired = {**new_state(), **snapshot(state)}
        repaired.update(repair_calls(repaired, reason))
        return repaired
