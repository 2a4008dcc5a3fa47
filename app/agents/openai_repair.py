"""Repairing an OpenAI conversation after a cancel or a failure (pure, no I/O).

`OpenAILoop.repair` must leave no computer_call unanswered so a follow-up run's
first request is valid. An output needs a screenshot and repair takes none, so:
a call that never started is dropped like a rejected one (answering it could
claim an acknowledgment nobody gave, and nothing happened on screen); a call
that started is answered with the last screenshot taken, and the next run
begins with a fresh one. Either way a note tells the model what happened.
"""

from __future__ import annotations

import copy
from typing import Any

from app.agents import openai_items as items_
from app.agents.openai_tools import call_actions

STALE = "The screenshot was taken before the interruption and may be outdated."


def repair_calls(state: dict[str, Any], why: str) -> dict[str, Any]:
    """The state fields that leave no computer_call unanswered (pure, for `repair`).

    A call that never started (never cleared, or waiting for a human) is dropped like
    a rejected one: answering it could claim an acknowledgment nobody gave. A call
    that started (cleared, so its acknowledgments are known) is answered with the last
    screenshot taken, which may predate its actions, and the next run starts with a
    fresh one. Either way a note tells the model what happened.
    """
    items = copy.deepcopy(state.get("items") or [])
    marks = copy.deepcopy(state.get("marks") or [])
    progress = state.get("progress") or {}
    in_flight = state.get("in_flight") or {}
    last_shot = state.get("last_shot")
    needs_screenshot = bool(state.get("needs_screenshot"))
    dropped: list[str] = []
    notes: list[str] = []
    for call in items_.unanswered_calls(items):
        call_id, raws = call["call_id"], call_actions(call)
        running = in_flight.get("call_id") == call_id
        done = int(progress.get("done", 0)) if progress.get("call_id") == call_id else 0
        acks = list(progress.get("acks") or []) if progress.get("call_id") == call_id else []
        # An output must acknowledge every provider check of its call.
        required = {c["id"] for c in call.get("pending_safety_checks") or []}
        covered = required <= {a.get("id") for a in acks}
        if running:
            note = items_.interrupted_note(raws, int(in_flight["index"]), why)
        elif done > 0:
            note = items_.partial_note(raws, done, why)
        else:
            note = items_.dropped_note(raws, why)
        if (running or done > 0) and last_shot is not None and covered:
            items.append(items_.call_output(call_id, str(last_shot["id"]), acks))
            note = items_.join_sentences(note, STALE)
        else:
            dropped.append(call_id)
        # Something may have happened on screen: the next run starts with a fresh look.
        needs_screenshot = needs_screenshot or running or done > 0
        notes.append(note)
    if dropped:
        items, marks = items_.drop_calls(items, marks, dropped)
    if notes:
        items.append(items_.user_message(" ".join(notes)))
    return {
        "items": items,
        "marks": marks,
        "in_flight": None,
        "awaiting": None,
        "progress": None,
        "current_turn": None,
        "needs_screenshot": needs_screenshot,
    }
