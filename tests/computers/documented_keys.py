"""Every key name the providers document, with what it must become.

Anthropic: the key/hold_key docstrings of the installed SDK
(`anthropic.types.ComputerKeyInput`: "ctrl+s", "alt+Tab", "ctrl+shift+Escape",
"Return", "Tab", "Escape", "Up", "Down", "Left", "Right", "Home", "End",
"Page_Up", "Page_Down", "Delete", "BackSpace", names case-insensitive), the
click/scroll `text` docstrings ("ctrl", "shift", "ctrl+shift"), the browser
toolset's key docstring ("ctrl+a", "cmd+shift+p") and the xdotool spellings the
issue names ("ctrl+shift+t", "super"). OpenAI: its SDK documents no names, so
the set is the keypress table of OpenAI's reference app (openai-cua-sample-app,
`CUA_KEY_TO_PLAYWRIGHT_KEY`) in the upper case the models send, plus the
issue's ["CTRL", "L"].

Each key is given with what every backend must make of it: the normalized
chord, which is also Playwright's key names (browser and cdp) and, by the
convention of computers/keys.py, the DOM `KeyboardEvent.key` a US keyboard
reports for each keydown, in order (the conformance suite checks that on the
probe page); and the keysym chord Kernel's press_key takes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DocumentedKey:
    wire: str | tuple[str, ...]  # Anthropic's `text`, or OpenAI's `keys` array
    keys: tuple[str, ...]  # the normalized chord: Playwright's names, and the DOM keys
    kernel: str  # the chord as Kernel's press_key takes it (X11 keysyms)

    @property
    def id(self) -> str:
        return self.wire if isinstance(self.wire, str) else "+".join(self.wire)


ANTHROPIC_KEYS = (
    DocumentedKey("Return", ("Enter",), "Return"),
    DocumentedKey("Tab", ("Tab",), "Tab"),
    DocumentedKey("Escape", ("Escape",), "Escape"),
    DocumentedKey("Up", ("ArrowUp",), "Up"),
    DocumentedKey("Down", ("ArrowDown",), "Down"),
    DocumentedKey("Left", ("ArrowLeft",), "Left"),
    DocumentedKey("Right", ("ArrowRight",), "Right"),
    DocumentedKey("Home", ("Home",), "Home"),
    DocumentedKey("End", ("End",), "End"),
    DocumentedKey("Page_Up", ("PageUp",), "Page_Up"),
    DocumentedKey("Page_Down", ("PageDown",), "Page_Down"),
    DocumentedKey("Delete", ("Delete",), "Delete"),
    DocumentedKey("BackSpace", ("Backspace",), "BackSpace"),
    # "Key names are case-insensitive".
    DocumentedKey("return", ("Enter",), "Return"),
    DocumentedKey("page_down", ("PageDown",), "Page_Down"),
    DocumentedKey("BACKSPACE", ("Backspace",), "BackSpace"),
    DocumentedKey("ctrl+s", ("Control", "s"), "Ctrl+s"),
    DocumentedKey("alt+Tab", ("Alt", "Tab"), "Alt+Tab"),
    DocumentedKey("ctrl+shift+Escape", ("Control", "Shift", "Escape"), "Ctrl+Shift+Escape"),
    DocumentedKey("ctrl+a", ("Control", "a"), "Ctrl+a"),
    # With Shift held a letter key reports its capital, as on a real keyboard.
    DocumentedKey("ctrl+shift+t", ("Control", "Shift", "T"), "Ctrl+Shift+t"),
    DocumentedKey("cmd+shift+p", ("Meta", "Shift", "P"), "Super+Shift+p"),
    DocumentedKey("super", ("Meta",), "Super"),
    DocumentedKey("ctrl", ("Control",), "Ctrl"),
    DocumentedKey("shift", ("Shift",), "Shift"),
    DocumentedKey("ctrl+shift", ("Control", "Shift"), "Ctrl+Shift"),
)

OPENAI_KEYS = (
    DocumentedKey(("CTRL", "L"), ("Control", "l"), "Ctrl+l"),
    DocumentedKey(("/",), ("/",), "slash"),
    DocumentedKey(("\\",), ("\\",), "backslash"),
    DocumentedKey(("ALT",), ("Alt",), "Alt"),
    DocumentedKey(("ARROWDOWN",), ("ArrowDown",), "Down"),
    DocumentedKey(("ARROWLEFT",), ("ArrowLeft",), "Left"),
    DocumentedKey(("ARROWRIGHT",), ("ArrowRight",), "Right"),
    DocumentedKey(("ARROWUP",), ("ArrowUp",), "Up"),
    DocumentedKey(("BACKSPACE",), ("Backspace",), "BackSpace"),
    DocumentedKey(("CAPSLOCK",), ("CapsLock",), "Caps_Lock"),
    DocumentedKey(("CMD",), ("Meta",), "Super"),
    DocumentedKey(("CTRL",), ("Control",), "Ctrl"),
    DocumentedKey(("DELETE",), ("Delete",), "Delete"),
    DocumentedKey(("END",), ("End",), "End"),
    DocumentedKey(("ENTER",), ("Enter",), "Return"),
    DocumentedKey(("ESC",), ("Escape",), "Escape"),
    DocumentedKey(("HOME",), ("Home",), "Home"),
    DocumentedKey(("INSERT",), ("Insert",), "Insert"),
    DocumentedKey(("OPTION",), ("Alt",), "Alt"),
    DocumentedKey(("PAGEDOWN",), ("PageDown",), "Page_Down"),
    DocumentedKey(("PAGEUP",), ("PageUp",), "Page_Up"),
    DocumentedKey(("SHIFT",), ("Shift",), "Shift"),
    DocumentedKey(("SPACE",), (" ",), "space"),
    DocumentedKey(("SUPER",), ("Meta",), "Super"),
    DocumentedKey(("TAB",), ("Tab",), "Tab"),
    DocumentedKey(("WIN",), ("Meta",), "Super"),
    # Letters come in upper case; only a held Shift makes them capitals.
    DocumentedKey(("A",), ("a",), "a"),
    DocumentedKey(("SHIFT", "A"), ("Shift", "A"), "Shift+a"),
    DocumentedKey(("CTRL", "SHIFT", "T"), ("Control", "Shift", "T"), "Ctrl+Shift+t"),
    DocumentedKey(("CTRL", "C"), ("Control", "c"), "Ctrl+c"),
)
