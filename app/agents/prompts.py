"""Built-in system prompts for computer-use loops, one per computer type.

The prompt tells the model what it is driving (a headless Chromium page, a
remote browser, a desktop), today's date, and how to behave in an unattended
session (no confirmations, one screenshot per action). A session's own
`system_prompt` is appended after it, so operators can add rules without
losing the basics.
"""

from __future__ import annotations

from datetime import date

_COMMON = """\
* You are operating a computer on behalf of a user, unattended: nobody will answer \
questions in the middle of the task. Do not ask for confirmation; make reasonable \
choices and carry the task through.
* After every action you receive a fresh screenshot. Check it before acting again, \
and do not repeat an action just because the screen has not caught up: wait briefly instead.
* Coordinates are pixels of the screenshots you receive, origin at the top left.
* Prefer keyboard shortcuts and typing into fields over long sequences of mouse moves.
* When the task is done, reply with the answer or a short summary of what you did, \
without calling any tool. If it cannot be done, say why.
* The current date is {today}."""

_BROWSER = """\
<SYSTEM_CAPABILITY>
* You are looking at a single page of a headless Chromium browser, shown at the \
size of the screenshots. There is no browser chrome: no address bar, tabs or bookmarks.
* Navigate by following links and by using the pages' own forms and search fields; \
keyboard shortcuts of a browser window (ctrl+l, ctrl+t) do nothing here.
* Pages may take a moment to load after a click; scroll to see content below the fold.
{common}
</SYSTEM_CAPABILITY>"""

_REMOTE_BROWSER = """\
<SYSTEM_CAPABILITY>
* You are driving a Chromium browser window (possibly with its address bar and tabs \
visible) through screenshots, mouse and keyboard.
* To visit an address, use the address bar (ctrl+l, type the URL, Return).
{common}
</SYSTEM_CAPABILITY>"""

_DESKTOP = """\
<SYSTEM_CAPABILITY>
* You are driving a graphical desktop through screenshots, mouse and keyboard.
{common}
</SYSTEM_CAPABILITY>"""

# cdp and kernel computers attach to a full browser window, so the model may use
# its address bar; the local `browser` is a bare page without one.
_BY_COMPUTER = {
    "browser": _BROWSER,
    "cdp": _REMOTE_BROWSER,
    "kernel": _REMOTE_BROWSER,
    "fake": _BROWSER,
}


def computer_use_system_prompt(
    computer_type: str, extra: str | None, *, today: date | None = None
) -> str:
    """The built-in prompt for `computer_type`, with the session's `extra` text appended."""
    template = _BY_COMPUTER.get(computer_type, _DESKTOP)
    common = _COMMON.format(today=(today or date.today()).strftime("%A, %B %-d, %Y"))
    prompt = template.format(common=common)
    if extra and extra.strip():
        prompt = f"{prompt}\n\n{extra.strip()}"
    return prompt
