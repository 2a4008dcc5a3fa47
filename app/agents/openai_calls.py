"""Running one computer_call of an OpenAI run: safety checks, the actions, the answer.

A call is cleared first: its provider `pending_safety_checks` plus the
service's policy checks on every action (all actions of a GA batch, judged on
the page as it is before the batch) go to a human through
`ctx.await_safety`. Approved: the actions run in order, each bracketed by
checkpoints (the `in_flight` intent marker with its tool.call before, the
batch's `progress` with its tool.result after), and the first failure stops
the batch. The call is then answered with one screenshot, carrying exactly
the acknowledged provider checks; what the model must also know (an error,
actions that did not run) follows as a user message, the only place the API
allows text next to a call output.

Rejected or expired: the call is never answered (answering would claim an
acknowledgment nobody gave). It leaves the conversation with the reasoning
item before it, which makes the next request branch from the response before
(openai_items.drop_calls), a note tells the model why, and the run halts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, NoReturn

from app.agents import openai_events as ev
from app.agents import openai_items as items_
from app.agents.base import (
    CheckRequest,
    Event,
    RunHalted,
    SafetyDecision,
    StoredShot,
    TurnRecord,
    snapshot,
)
from app.agents.openai_items import Item
from app.agents.openai_tools import ActionInputError, call_actions, to_action, tool_of
from app.computers.base import Action, ComputerError, action_to_json

if TYPE_CHECKING:
    from app.agents.openai_run import OpenAIRun

Translated = Action | ActionInputError
RESTARTED = "Interrupted: the service restarted while this action was running."
NOW = "The screenshot shows the screen as it is now."
STALE = "The screen could not be captured: the screenshot is an older one."
NOT_EXECUTED = "Not executed: an earlier action of this call failed or was interrupted."


class CallExecutor:
    """Runs the computer_calls of one run; all state lives in `run.state`."""

    def __init__(self, run: OpenAIRun, wait_seconds: float) -> None:
        self.run = run
        self.ctx = run.ctx
        self.wait_seconds = wait_seconds

    @property
    def state(self) -> dict[str, Any]:
        return self.run.state

    def _translate(self, raws: list[Item]) -> list[Translated]:
        translated: list[Translated] = []
        for raw in raws:
            try:
                translated.append(to_action(raw, self.run.scale, wait_seconds=self.wait_seconds))
            except ActionInputError as exc:
                translated.append(exc)
        return translated

    async def run_call(self, call: Item) -> None:
        """Clear, run and answer one computer_call (resuming a batch where it stopped)."""
        call_id, tool, raws = call["call_id"], tool_of(call), call_actions(call)
        actions = self._translate(raws)
        progress = self.state["progress"]
        if progress is None or progress["call_id"] != call_id:
            acks, announced = await self._clear_with_human(call, tool, raws, actions)
            progress = {"call_id": call_id, "done": 0, "acks": acks, "announced": announced}
            self.state["progress"] = progress
        for index in range(progress["done"], len(raws)):
            action = actions[index]
            action_json = None if isinstance(action, ActionInputError) else action_to_json(action)
            call_data = ev.call_event(call_id, tool, raws[index], action_json)
            announce = (
                [] if index == 0 and progress.get("announced") else [("tool.call", call_data)]
            )
            if isinstance(action, ActionInputError):
                shot = await self._screenshot()
                result = self._result(call_data, error=str(action), shot=shot, executed=False)
                note = items_.failure_note(raws, index, str(action))
                await self._answer(call, raws, index + 1, [*announce, result], shot, note)
                return
            turn = self.state["current_turn"]
            self.state["in_flight"] = {
                "call_id": call_id,
                "turn": turn["index"] if turn else None,
                "index": index,
                "action": action_json,
            }
            await self.run.checkpoint(announce)

            started = time.monotonic()
            output: str | None = None
            error: str | None = None
            try:
                output = (await self.ctx.computer.execute(action)).output
            except ComputerError as exc:
                error = str(exc) or type(exc).__name__
            else:
                # It ran: a cancel before its tool.result is committed still reports it.
                self.ctx.note_executed(call_id, action_json)
            duration_ms = int((time.monotonic() - started) * 1000)
            progress["done"] = index + 1
            self.state["in_flight"] = None
            if error is None and index + 1 < len(raws):
                # One screenshot per call: the model sees the screen after the batch.
                result = self._result(call_data, output=output, duration_ms=duration_ms)
                await self.run.checkpoint([result], defer=True)  # the next action writes first
                continue
            shot = await self._screenshot()
            result = self._result(
                call_data, output=output, error=error, shot=shot, duration_ms=duration_ms
            )
            failed = items_.failure_note(raws, index, error) if error is not None else None
            await self._answer(call, raws, index + 1, [result], shot, failed)
            return
        # An empty GA batch: nothing to run, but the call still wants a screenshot.
        await self._answer(call, raws, len(raws), [], await self._screenshot(), None)

    async def settle_interrupted(self) -> None:
        """After a restart: the in-flight action may or may not have run. Never run it
        again; answer the call with the screen as it is now and tell the model."""
        in_flight = self.state["in_flight"]
        pending = items_.unanswered_calls(self.state["items"])
        call = next((c for c in pending if c["call_id"] == in_flight["call_id"]), None)
        if call is None:  # already answered: the marker outlived its action
            self.state["in_flight"] = None
            return
        index, raws = in_flight["index"], call_actions(call)
        if self.state["progress"] is None:
            self.state["progress"] = {"call_id": call["call_id"], "done": index, "acks": []}
        self.state["in_flight"] = None
        call_data = ev.call_event(call["call_id"], tool_of(call), raws[index], in_flight["action"])
        shot = await self._screenshot()
        # Reported as executed: it may have run, and last_action_executed must not miss it.
        result = self._result(call_data, error=RESTARTED, shot=shot)
        note = items_.join_sentences(items_.interrupted_note(raws, index, RESTARTED), NOW)
        await self._answer(call, raws, index + 1, [result], shot, note)

    # ---- safety ------------------------------------------------------------------------

    async def _clear_with_human(
        self, call: Item, tool: str, raws: list[Item], actions: list[Translated]
    ) -> tuple[list[Item], bool]:
        """(the provider checks to acknowledge, whether the first tool.call was announced).
        Waits for a human when the call has checks; a rejection or a timeout halts."""
        call_id = call["call_id"]
        resuming = self.state["awaiting"] == call_id
        pending = list(call.get("pending_safety_checks") or [])
        checks = [
            CheckRequest(str(c.get("code") or "unknown"), str(c.get("message") or ""), c["id"])
            for c in pending
        ]
        valid = [action_to_json(a) for a in actions if not isinstance(a, ActionInputError)]
        for action_json in valid:
            for check in await self.ctx.policy_checks(action_json):
                if check not in checks:  # one domain check for a batch on the same page
                    checks.append(check)
        if not checks and not resuming:
            return [], False
        first = None
        if raws:
            first_json = None if isinstance(actions[0], ActionInputError) else valid[0]
            first = ev.call_event(call_id, tool, raws[0], first_json)
        if not resuming:
            self.state["awaiting"] = call_id
            await self.run.checkpoint([("tool.call", first)] if first else [])
        # The human reviews the whole call: one action, or a GA batch as a whole.
        review = valid[0] if len(valid) == 1 else {"type": "batch", "actions": valid}
        decision = await self.ctx.await_safety(
            call_id, review if valid else None, checks, snapshot(self.state)
        )
        self.state["awaiting"] = None
        if not decision.approved:
            await self._halt(call, tool, raws, actions, decision, first)
        acknowledged = {c.provider_check_id for c in decision.acknowledged if c.provider_check_id}
        acks = [
            {k: v for k, v in c.items() if k in ("id", "code", "message") and v is not None}
            for c in pending
            if c["id"] in acknowledged
        ]
        return acks, first is not None

    async def _halt(
        self,
        call: Item,
        tool: str,
        raws: list[Item],
        actions: list[Translated],
        decision: SafetyDecision,
        first: dict[str, Any] | None,
    ) -> NoReturn:
        """Report every action as not executed, drop the call (never answered), leave a
        note for the next run, checkpoint a state that stays halted, and end the run."""
        stop = decision.stop_reason or "safety_check_rejected"
        if stop == "safety_check_rejected":
            text = f"Rejected by a human: {decision.reason or 'no reason given'}"
        else:
            text = "Not executed: the safety check expired without a human's decision."
        events: list[Event] = []
        for index, raw in enumerate(raws):
            action = actions[index]
            action_json = None if isinstance(action, ActionInputError) else action_to_json(action)
            call_data = (
                first
                if index == 0 and first
                else ev.call_event(call["call_id"], tool, raw, action_json)
            )
            if index > 0:
                events.append(("tool.call", call_data))
            events.append(self._result(call_data, error=text, executed=False))
        state = self.state
        if state["current_turn"] is not None:
            await self.ctx.record_turn(TurnRecord(**state["current_turn"]))
            state["current_turn"] = None
        pending = [c["call_id"] for c in items_.unanswered_calls(state["items"])]
        state["items"], state["marks"] = items_.drop_calls(state["items"], state["marks"], pending)
        state["items"].append(items_.user_message(items_.dropped_note(raws, text)))
        state.update(progress=None, in_flight=None, halted={"stop_reason": stop, "message": text})
        await self.run.checkpoint(events)
        raise RunHalted(stop, text)

    # ---- answers -------------------------------------------------------------------------

    async def _screenshot(self) -> tuple[str, StoredShot | None]:
        """(screenshot id for the call output, the stored shot for the event). Falls back
        to the last screenshot when the computer cannot take one."""
        shot = await self.run.capture()
        if shot is not None:
            return shot.id, shot
        last = self.state["last_shot"]
        if last is None:
            raise ComputerError("the computer cannot take a screenshot")
        return str(last["id"]), None

    def _result(
        self,
        call_data: dict[str, Any],
        *,
        output: str | None = None,
        error: str | None = None,
        shot: tuple[str, StoredShot | None] | None = None,
        duration_ms: int = 0,
        executed: bool = True,
    ) -> Event:
        """A tool.result event, also added to the turn's record."""
        stored = shot[1] if shot else None
        result = ev.result_event(
            call_data["call_id"],
            is_error=error is not None,
            output=output,
            error=error,
            shot=stored,
            duration_ms=duration_ms,
            executed=executed,
        )
        turn = self.state["current_turn"]
        if turn is not None:
            turn["actions"].append(call_data)
            turn["results"].append({**result, "screenshot": stored.id if stored else None})
        return ("tool.result", result)

    async def _answer(
        self,
        call: Item,
        raws: list[Item],
        skip_from: int,
        events: list[Event],
        shot: tuple[str, StoredShot | None],
        note: str | None,
    ) -> None:
        """Answer the call (actions from `skip_from` on are reported as not executed), with
        the note after it, and checkpoint it all with `events` in one transaction."""
        tool = tool_of(call)
        events = list(events)
        for index in range(skip_from, len(raws)):
            try:
                action_json: dict[str, Any] | None = action_to_json(
                    to_action(raws[index], self.run.scale, wait_seconds=self.wait_seconds)
                )
            except ActionInputError:
                action_json = None  # shown without a normalized action; not run either way
            call_data = ev.call_event(call["call_id"], tool, raws[index], action_json)
            events.append(("tool.call", call_data))
            events.append(self._result(call_data, error=NOT_EXECUTED, executed=False))
        progress = self.state["progress"] or {}
        state = self.state
        state["items"].append(
            items_.call_output(call["call_id"], shot[0], progress.get("acks", []))
        )
        if shot[1] is None:
            note = items_.join_sentences(note or "", STALE)
        if note:
            state["items"].append(items_.user_message(note))
        state.update(progress=None, in_flight=None)
        await self.run.checkpoint(events, defer=True)  # the next step writes first
