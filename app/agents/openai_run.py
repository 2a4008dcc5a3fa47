"""One run of the OpenAI loop: the step logic behind `OpenAILoop.run`.

Every step reads the checkpointed state to decide what to do next: a halted
run stays halted; an action in flight when the process died is reported as
interrupted (never run again); an unanswered computer_call is run
(openai_calls.py); a finished model stops the run; anything else calls the
model. The model call and each action are bracketed by checkpoints, so a
restarted process resumes exactly where the last one left off.
"""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

from openai import AsyncOpenAI
from openai.types.responses import Response

from app.agents import openai_events as ev
from app.agents import openai_items as items_
from app.agents import structured
from app.agents.base import (
    Event,
    ProviderError,
    RunContext,
    RunHalted,
    RunLimitExceeded,
    RunOutcome,
    StoredShot,
    TurnRecord,
    snapshot,
)
from app.agents.openai_calls import CallExecutor
from app.agents.openai_repair import repair_calls
from app.agents.openai_request import RequestBuilder
from app.computers.base import ComputerError, ShotImage
from app.computers.scaling import resize_png

CONTINUE_PROMPT = (
    "Your previous reply was cut off by the output token limit. Continue from where it stopped."
)
# Stops that end the run as `refusal`: a refusal part, or output withheld by the filter.
REFUSALS = frozenset({"refusal", "content_filter"})


def stop_reason_of(response: Response, output: list[items_.Item]) -> str:
    """What turn.completed reports: "refusal", an incomplete response's reason, or the
    response's status (OpenAI has no stop_reason of its own)."""
    if items_.has_refusal(output):
        return "refusal"
    if response.status == "incomplete":
        details = response.incomplete_details
        return (details.reason if details is not None else None) or "incomplete"
    return response.status or "completed"


class OpenAIRun:
    """The mutable side of one run: state, settings resolved from the config, caches."""

    def __init__(
        self,
        client: AsyncOpenAI,
        ctx: RunContext,
        state: dict[str, Any],
        *,
        wait_seconds: float,
        today: date,
    ) -> None:
        self.ctx, self.config, self.state = ctx, ctx.config, state
        self.request = RequestBuilder(client, ctx, ctx.computer.display, today)
        self.scale = self.request.scale
        self.calls = CallExecutor(self, wait_seconds)

    async def drive(self, user_input: str | None, *, resumed: bool) -> RunOutcome:
        # A run that crashed before its first checkpoint left no trace in the state:
        # start it like a new one (with whatever input the runner passes).
        if not resumed or self.state["run_id"] != self.config.run_id:
            await self._begin(user_input)
        while True:
            outcome = await self._step()
            if outcome is not None:
                return outcome

    async def _begin(self, user_input: str | None) -> None:
        state = self.state
        if items_.unanswered_calls(state["items"]) or state["in_flight"]:
            # The runner repairs after a cancel or failure; this covers anything else.
            state.update(repair_calls(state, "the previous run was interrupted"))
        state.update(run_id=self.config.run_id, next_turn=0, stop_reason=None, in_flight=None)
        state.update(awaiting=None, progress=None, current_turn=None, continued=False)
        state["halted"] = None
        state["failed"] = None
        state["output_repairs"] = 0
        shot = None
        if state["last_shot"] is None or state["needs_screenshot"]:
            shot = await self.capture()
            state["needs_screenshot"] = False
        if user_input or shot is not None:
            message = items_.user_message(
                user_input, shot.id if shot else None, self.request.detail
            )
            state["items"].append(message)
        await self.checkpoint()

    async def _step(self) -> RunOutcome | None:
        state = self.state
        items = state["items"]
        if state["halted"]:
            # A crash between the rejection's checkpoint and the end of the run.
            halted = state["halted"]
            raise RunHalted(halted["stop_reason"], halted["message"])
        if state.get("failed"):
            # Likewise for a failure decided before the crash: it stays a failure.
            failed = state["failed"]
            raise ProviderError(failed["message"], type_=failed["type"])
        if state["in_flight"]:
            await self.calls.settle_interrupted()
            return None
        pending = items_.unanswered_calls(items)
        if pending:
            await self.calls.run_call(pending[0])
            return None
        if state["current_turn"] is not None:
            # Every call answered (now, or before a restart): the turn's row gets its results.
            await self.ctx.record_turn(TurnRecord(**state["current_turn"]))
            state["current_turn"] = None
        if state["stop_reason"] in REFUSALS:
            return RunOutcome("refusal", output=items_.final_text(items) or None)
        if items and not items_.is_input(items[-1]):
            return await self._answer_outcome(items_.final_text(items))
        if state["next_turn"] >= self.config.max_steps:
            # Checked at a step boundary: every call is answered, nothing to repair.
            raise RunLimitExceeded(
                "max_steps", f"the run reached its limit of {self.config.max_steps} steps"
            )
        await self._call_model()
        return None

    # ---- the model call ----------------------------------------------------------

    async def _call_model(self) -> None:
        state = self.state
        index = state["next_turn"]
        await self.ctx.emit("turn.started", {"turn": index, "model": self.config.model})
        response, turn, lost = await self.request.send(state["items"], state["marks"], index)
        await self.ctx.record_turn(TurnRecord(**turn))
        if response.status == "failed":
            error = response.error
            raise ProviderError(
                error.message if error is not None else "the response failed",
                type_=(error.code if error is not None else None) or "provider_error",
            )

        output = [items_.output_item(item.to_dict(mode="json")) for item in response.output]
        items = state["items"]
        items.extend(output)
        marks = [] if lost else state["marks"]
        state["marks"] = items_.add_mark(marks, response.id, len(items))
        stop = stop_reason_of(response, output)
        calls = [item for item in output if item.get("type") == "computer_call"]
        # A refused or truncated call is never run, so it is never answered either:
        # it leaves the conversation, which then branches from the previous response.
        dropped = [
            c["call_id"] for c in calls if stop in REFUSALS or c.get("status") == "incomplete"
        ]
        if dropped:
            state["items"], state["marks"] = items_.drop_calls(items, state["marks"], dropped)
        runnable = len(calls) > len(dropped)
        state.update(next_turn=index + 1, stop_reason=stop, current_turn=turn if runnable else None)
        events = ev.content_events(output)
        completed = {"turn": index, "usage": turn["usage"], "latency_ms": turn["latency_ms"]}
        events.append(("turn.completed", {**completed, "stop_reason": stop}))
        if response.status == "incomplete" and not runnable and stop not in REFUSALS:
            if state["continued"]:
                message = f"the response was cut short twice in a row ({stop})"
                # Recorded in the same checkpoint, so a resume fails the same way.
                state["failed"] = {"type": "max_tokens", "message": message}
                await self.checkpoint(events)
                raise ProviderError(message, type_="max_tokens")
            # Ask once for the rest rather than ending on a half-written answer.
            state["continued"] = True
            state["items"].append(items_.user_message(CONTINUE_PROMPT))
        else:
            state["continued"] = False
        await self.checkpoint(events, defer=True)  # the next step writes first

    async def _answer_outcome(self, text: str) -> RunOutcome | None:
        """The run's end on the model's final `text`; with an output_schema, an invalid
        answer is sent back once (None: the loop goes on), then fails the run."""
        schema = self.config.output_schema
        if schema is None:
            return RunOutcome("end_turn", output=text)
        last = self.state["items"][-1]
        texts = items_.message_texts(last) if last.get("type") == "message" else []
        value, errors = structured.parse_answer(
            text, schema, last_part=texts[-1] if texts else None
        )
        if not errors:
            return RunOutcome("end_turn", output=text, output_json=value)
        state = self.state
        if state["output_repairs"] < structured.MAX_REPAIRS:
            state["output_repairs"] += 1
            state["items"].append(items_.user_message(structured.repair_prompt(errors)))
            await self.checkpoint()
            return None
        message = structured.failure_message(errors)
        state["failed"] = {"type": structured.OUTPUT_INVALID, "message": message}
        await self.checkpoint()
        raise ProviderError(message, type_=structured.OUTPUT_INVALID)

    # ---- screenshots and checkpoints -------------------------------------------------

    async def capture(self) -> StoredShot | None:
        """Store a screenshot at the size the model works in (None if the computer
        cannot take one; the caller falls back to the last one)."""
        computer = self.ctx.computer
        try:
            raw: ShotImage = await computer.screenshot()
            page_url = await computer.current_url()
        except ComputerError:
            return None
        scaled = await asyncio.to_thread(resize_png, raw, self.scale.model)
        shot = await self.ctx.store_screenshot(scaled, page_url)
        self.request.remember(shot.id, scaled)
        self.state["last_shot"] = shot.to_event()
        return shot

    async def checkpoint(self, events: list[Event] | None = None, *, defer: bool = False) -> None:
        # A snapshot: the runner keeps the object it was given (to repair after a
        # cancel), which must not change under it as the loop goes on.
        await self.ctx.checkpoint(snapshot(self.state), events or [], defer=defer)
