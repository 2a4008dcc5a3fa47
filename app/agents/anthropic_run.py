"""One run of the Anthropic loop: the step logic behind `AnthropicLoop.run`.

Every step reads the checkpointed state to decide what to do next, and every
side effect is bracketed by checkpoints: the `tool.call` event and the
in-flight marker are committed *before* an action runs (the intent record),
its `tool.result` and the answered transcript after. A restarted process
therefore never runs an action twice: it finds the marker and reports the
action as interrupted instead. A decision to end the run (a rejected safety
check, a failed reply) is written into the state by the checkpoint that acts on
it, with the answers to every call it leaves unrun, so a resumed run ends the
same way instead of carrying on.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date
from typing import Any

from anthropic import AsyncAnthropic

from app.agents import anthropic_events as ev
from app.agents import anthropic_transcript as tx
from app.agents import structured
from app.agents.anthropic_request import RequestBuilder
from app.agents.anthropic_tools import (
    ActionInputError,
    cursor_to_model,
    split_tool_use,
    to_action,
    zoom_size,
)
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
from app.computers.base import ComputerError, CursorPosition, ShotImage, action_to_json
from app.computers.scaling import resize_png

CONTINUE_PROMPT = tx.CONTINUE_PROMPT
REFUSED = "Not executed: the model stopped with a refusal."


class AnthropicRun:
    """The mutable side of one run: state, settings resolved from the config, caches."""

    def __init__(
        self,
        client: AsyncAnthropic,
        ctx: RunContext,
        state: dict[str, Any],
        *,
        image_chunk: int | None,
        today: date,
    ) -> None:
        self.ctx, self.config, self.state = ctx, ctx.config, state
        display = ctx.computer.display
        self.request = RequestBuilder(client, ctx, display, image_chunk=image_chunk, today=today)
        self.scale = self.request.scale

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
        if tx.unanswered_tool_uses(state["messages"]):
            # The runner repairs after a cancel or failure; this covers anything else.
            state["messages"] = tx.repair_messages(state["messages"], "Interrupted")
        state.update(run_id=self.config.run_id, next_turn=0, stop_reason=None, in_flight=None)
        state.update(current_turn=None, continued=False, halted=None, failed=None)
        state["output_repairs"] = 0
        blocks: list[tx.Block] = []
        if user_input:
            blocks.append({"type": "text", "text": user_input})
        if state["last_shot"] is None:
            shot = await self._capture()
            if shot is not None:
                blocks.append(tx.image_ref(shot.id))
        if blocks:
            tx.add_user_content(state["messages"], blocks)
        await self._checkpoint()

    async def _step(self) -> RunOutcome | None:
        state = self.state
        messages = state["messages"]
        # A crash or a drain after the checkpoint that ended the run: end it the same way.
        self._raise_if_ended()
        if state["in_flight"]:
            await self._settle_interrupted()
            return None
        pending = tx.unanswered_tool_uses(messages)
        if pending:
            await self._run_tools(pending)
            return None
        if state["current_turn"] is not None:
            # Every call answered (now, or before a restart): the turn's row gets its results.
            await self.ctx.record_turn(TurnRecord(**state["current_turn"]))
            state["current_turn"] = None
        if state["stop_reason"] == "refusal":
            # Checked before the roles: a refusal's tool calls were answered at once.
            return RunOutcome("refusal", output=tx.last_assistant_text(messages) or None)
        last_role = messages[-1]["role"] if messages else None
        if last_role == "assistant" and state["stop_reason"] != "pause_turn":
            return await self._answer_outcome(tx.last_assistant_text(messages))
        if state["next_turn"] >= self.config.max_steps:
            # Checked at a step boundary: every tool_use is answered, nothing to repair.
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
        blocks, stop, turn = await self.request.send(state["messages"], index)
        usage, latency_ms = turn["usage"], turn["latency_ms"]
        await self.ctx.record_turn(TurnRecord(**turn))

        tx.add_assistant_content(state["messages"], blocks)
        has_tools = any(b.get("type") == "tool_use" for b in blocks)
        state.update(
            next_turn=index + 1, stop_reason=stop, current_turn=turn if has_tools else None
        )
        events = ev.content_events(blocks)
        events.append(
            (
                "turn.completed",
                {"turn": index, "usage": usage, "latency_ms": latency_ms, "stop_reason": stop},
            )
        )
        if stop == "max_tokens" and not has_tools:
            if state["continued"]:
                state["failed"] = {
                    "type": "max_tokens",
                    "message": "the model hit max_tokens twice in a row without finishing",
                }
            else:
                # Ask once for the rest rather than ending on a half-written answer.
                state["continued"] = True
                prompt = {"type": "text", "text": CONTINUE_PROMPT}
                tx.add_user_content(state["messages"], [prompt])
        elif stop != "pause_turn":
            state["continued"] = False
        if stop == "refusal" and has_tools:
            state["messages"] = tx.repair_messages(state["messages"], REFUSED)
            state["current_turn"] = None
        if stop == "model_context_window_exceeded":
            state["failed"] = {
                "type": "context_window_exceeded",
                "message": "the conversation no longer fits the model's context window; "
                "lower image_retention or start a new session",
            }
        await self._checkpoint(events, defer=True)  # the next step writes first
        self._raise_if_ended()

    async def _answer_outcome(self, text: str) -> RunOutcome | None:
        """The run's end on the model's final `text`; with an output_schema, an invalid
        answer is sent back once (None: the loop goes on), then fails the run."""
        schema = self.config.output_schema
        if schema is None:
            return RunOutcome("end_turn", output=text)
        texts = [
            b["text"] for b in self.state["messages"][-1]["content"] if b.get("type") == "text"
        ]
        value, errors = structured.parse_answer(
            text, schema, last_part=texts[-1] if texts else None
        )
        if not errors:
            return RunOutcome("end_turn", output=text, output_json=value)
        state = self.state
        if state["output_repairs"] < structured.MAX_REPAIRS:
            state["output_repairs"] += 1
            prompt = {"type": "text", "text": structured.repair_prompt(errors)}
            tx.add_user_content(state["messages"], [prompt])
            await self._checkpoint()
            return None
        message = structured.failure_message(errors)
        state["failed"] = {"type": structured.OUTPUT_INVALID, "message": message}
        await self._checkpoint()
        raise ProviderError(message, type_=structured.OUTPUT_INVALID)

    def _raise_if_ended(self) -> None:
        """Raise what ended the run, once a checkpointed state records it."""
        halted, failed = self.state["halted"], self.state["failed"]
        if halted:
            raise RunHalted(halted["stop_reason"], halted["message"])
        if failed:
            raise ProviderError(failed["message"], type_=failed["type"])

    # ---- tool calls ---------------------------------------------------------------

    async def _run_tools(self, pending: list[tx.Block]) -> None:
        for position, tool_use in enumerate(pending):
            if not await self._execute(tool_use, pending[position + 1 :]):
                return

    async def _execute(self, tool_use: tx.Block, later: list[tx.Block]) -> bool:
        """Run one tool_use; False when it failed. A failure answers its `later` siblings
        as not executed in the same checkpoint, so a resumed run never runs them."""
        call = ev.call_event(tool_use)
        name, params = split_tool_use(tool_use)
        try:
            action = to_action(name, params, self.scale)
        except ActionInputError as exc:
            events = self._answer(tool_use, call, text=str(exc), is_error=True, executed=False)
            await self._checkpoint([("tool.call", call), *events, *self._skip(later)])
            return False
        call["action"] = action_to_json(action)
        announced = await self._clear_with_human(tool_use, call)
        turn = self.state["current_turn"]
        self.state["in_flight"] = {
            "call_id": tool_use["id"],
            "turn": turn["index"] if turn else None,
            "action": call["action"],
        }
        await self._checkpoint([] if announced else [("tool.call", call)])

        started = time.monotonic()
        output: str | None = None
        error: str | None = None
        image: ShotImage | None = None
        try:
            result = await self.ctx.computer.execute(action)
        except ComputerError as exc:
            error = str(exc) or type(exc).__name__
        else:
            # It ran: a cancel before its tool.result is committed still reports it.
            self.ctx.note_executed(tool_use["id"], call["action"])
            output, image = result.output, result.image
        duration_ms = int((time.monotonic() - started) * 1000)
        if output and isinstance(action, CursorPosition):
            output = cursor_to_model(output, self.scale)
        shot = await self._capture(image)
        events = self._answer(
            tool_use,
            call,
            text=error or output,
            is_error=error is not None,
            shot=shot,
            output=output,
            duration_ms=duration_ms,
        )
        if error is not None:
            events += self._skip(later)
        await self._checkpoint(events, defer=True)  # the next step writes first
        return error is None

    async def _clear_with_human(self, tool_use: tx.Block, call: dict[str, Any]) -> bool:
        """Wait for a human when the session's policy flags this call; True when the
        tool.call event was already announced. A rejection or a timeout answers the
        call (and its later siblings) without running it and halts the run, all in one
        checkpoint that records the halt."""
        call_id = tool_use["id"]
        resuming = self.state.get("awaiting") == call_id
        checks = await self.ctx.policy_checks(call["action"])
        if not checks and not resuming:
            return False
        if not resuming:
            self.state["awaiting"] = call_id
            await self._checkpoint([("tool.call", call)])
        decision = await self.ctx.await_safety(
            call_id, call["action"], checks, snapshot(self.state)
        )
        self.state["awaiting"] = None
        if decision.approved:
            return True
        if decision.stop_reason == "safety_check_rejected":
            text = f"Rejected by a human: {decision.reason}"
        else:
            text = "Not executed: the safety check expired without a human's decision."
        events = self._answer(tool_use, call, text=text, is_error=True, executed=False)
        events += self._skip(tx.unanswered_tool_uses(self.state["messages"]))
        state = self.state
        if state["current_turn"] is not None:  # every call of the turn is answered now
            await self.ctx.record_turn(TurnRecord(**state["current_turn"]))
            state["current_turn"] = None
        stop = decision.stop_reason or "safety_check_rejected"
        state["halted"] = {"stop_reason": stop, "message": text}
        await self._checkpoint(events)
        raise RunHalted(stop, text)

    async def _settle_interrupted(self) -> None:
        """After a restart: the in-flight action may or may not have run. Never run it
        again; tell the model, show it the screen as it is now, skip the rest."""
        call_id = self.state["in_flight"]["call_id"]
        pending = tx.unanswered_tool_uses(self.state["messages"])
        at = next((i for i, b in enumerate(pending) if b["id"] == call_id), None)
        if at is None:  # already answered: the marker outlived its action
            self.state["in_flight"] = None
            return
        shot = await self._capture()
        call = ev.call_event(pending[at], self.state["in_flight"].get("action"))
        events = self._answer(pending[at], call, text=tx.INTERRUPTED, is_error=True, shot=shot)
        await self._checkpoint(events + self._skip(pending[at + 1 :]))

    def _skip(self, tool_uses: list[tx.Block]) -> list[Event]:
        """Answer `tool_uses` as not executed; their events go into the checkpoint of the
        answer that stopped them, so no resume can run them."""
        events: list[Event] = []
        for tool_use in tool_uses:
            call = ev.call_event(tool_use)
            name, params = split_tool_use(tool_use)
            try:
                call["action"] = action_to_json(to_action(name, params, self.scale))
            except ActionInputError:
                pass  # shown without a normalized action; it is not run either way
            events.append(("tool.call", call))
            events.extend(
                self._answer(tool_use, call, text=tx.NOT_EXECUTED, is_error=True, executed=False)
            )
        return events

    def _answer(
        self,
        tool_use: tx.Block,
        call: dict[str, Any],
        *,
        text: str | None,
        is_error: bool,
        shot: StoredShot | None = None,
        output: str | None = None,
        duration_ms: int = 0,
        executed: bool = True,
    ) -> list[Event]:
        """Add the tool_result to the transcript and the turn; return its event."""
        block = tx.tool_result(
            tool_use, text=text, is_error=is_error, shot_id=shot.id if shot else None
        )
        tx.add_tool_result(self.state["messages"], block)
        self.state["in_flight"] = None
        result = ev.result_event(
            tool_use["id"],
            is_error=is_error,
            output=output,
            error=text if is_error else None,
            shot=shot,
            duration_ms=duration_ms,
            executed=executed,
        )
        turn = self.state["current_turn"]
        if turn is not None:
            turn["actions"].append(call)
            turn["results"].append({**result, "screenshot": shot.id if shot else None})
        return [("tool.result", result)]

    # ---- screenshots and checkpoints -------------------------------------------------

    async def _capture(self, image: ShotImage | None = None) -> StoredShot | None:
        """Store a screenshot (or a zoom capture) at the size the model works in."""
        computer = self.ctx.computer
        try:
            raw = image if image is not None else await computer.screenshot()
            page_url = await computer.current_url()
        except ComputerError:
            return None  # the tool_result still carries the text; the next action retries
        size = self.scale.model if image is None else zoom_size(image, self.scale.model)
        scaled = await asyncio.to_thread(resize_png, raw, size)
        shot = await self.ctx.store_screenshot(scaled, page_url)
        self.request.remember(shot.id, scaled)
        if image is None:
            self.state["last_shot"] = shot.to_event()
        return shot

    async def _checkpoint(self, events: list[Event] | None = None, *, defer: bool = False) -> None:
        # A snapshot: the runner keeps the object it was given (to repair after a
        # cancel), which must not change under it as the loop goes on.
        await self.ctx.checkpoint(snapshot(self.state), events or [], defer=defer)
