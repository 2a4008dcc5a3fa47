"""Key name translation: xdotool keysyms and OpenAI key arrays -> normalized names."""

from __future__ import annotations

import pytest

from app.agents import anthropic_tools, openai_tools
from app.computers import kernel_keys
from app.computers.base import Click, ComputerError, Display, HoldKey, Key
from app.computers.keys import (
    MODIFIER_KEYS,
    NAMED_KEYS,
    check_normalized_keys,
    is_normalized_key,
    normalize_key,
    parse_modifiers,
    parse_openai_keys,
    parse_xdotool_combo,
    parse_xdotool_sequence,
)
from app.computers.scaling import ScaleMap
from tests.computers.documented_keys import ANTHROPIC_KEYS, OPENAI_KEYS, DocumentedKey

SCALE = ScaleMap.identity(Display(1280, 800))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ctrl+shift+t", ["Control", "Shift", "T"]),  # Shift makes the capital
        ("ctrl+s", ["Control", "s"]),
        ("ctrl+A", ["Control", "a"]),  # inside a chord the letter names the physical key
        ("A", ["A"]),  # alone it types the capital
        ("a", ["a"]),
        ("Return", ["Enter"]),
        ("KP_Enter", ["Enter"]),
        ("enter", ["Enter"]),
        ("Page_Down", ["PageDown"]),
        ("Page_Up", ["PageUp"]),
        ("Next", ["PageDown"]),
        ("Prior", ["PageUp"]),
        ("super", ["Meta"]),
        ("cmd+c", ["Meta", "c"]),
        ("meta", ["Meta"]),
        ("Super_L", ["Meta"]),
        ("alt+Tab", ["Alt", "Tab"]),
        ("Alt_L", ["Alt"]),
        ("Control_R", ["Control"]),
        ("shift+Tab", ["Shift", "Tab"]),
        ("BackSpace", ["Backspace"]),
        ("Escape", ["Escape"]),
        ("Esc", ["Escape"]),
        ("space", [" "]),
        ("ctrl+space", ["Control", " "]),
        (" ", [" "]),
        ("Up", ["ArrowUp"]),
        ("Down", ["ArrowDown"]),
        ("Left", ["ArrowLeft"]),
        ("Right", ["ArrowRight"]),
        ("KP_Up", ["ArrowUp"]),
        ("alt+Left", ["Alt", "ArrowLeft"]),
        ("F5", ["F5"]),
        ("f12", ["F12"]),
        ("ctrl+minus", ["Control", "-"]),
        ("ctrl+plus", ["Control", "+"]),
        ("ctrl++", ["Control", "+"]),
        ("+", ["+"]),
        ("ctrl + c", ["Control", "c"]),
        ("Delete", ["Delete"]),
        ("KP_Delete", ["Delete"]),
        ("Insert", ["Insert"]),
        ("Home", ["Home"]),
        ("End", ["End"]),
        ("KP_5", ["5"]),
        ("KP_Add", ["+"]),
        ("slash", ["/"]),
        ("period", ["."]),
        ("comma", [","]),
        ("semicolon", [";"]),
        ("apostrophe", ["'"]),
        ("quotedbl", ['"']),
        ("grave", ["`"]),
        ("bracketleft", ["["]),
        ("backslash", ["\\"]),
        ("equal", ["="]),
        ("Caps_Lock", ["CapsLock"]),
        ("Print", ["PrintScreen"]),
        ("Menu", ["ContextMenu"]),
        ("XF86AudioRaiseVolume", ["AudioVolumeUp"]),
        ("ArrowDown", ["ArrowDown"]),  # normalized names are accepted as is
        ("Control+Shift+T", ["Control", "Shift", "T"]),
        ("shift+a", ["Shift", "A"]),
        ("\n", ["Enter"]),
        ("\t", ["Tab"]),
        ("1", ["1"]),
        ("é", ["é"]),
    ],
)
def test_parse_xdotool_combo(text: str, expected: list[str]) -> None:
    assert parse_xdotool_combo(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ctrl+Foo", "Unknown key name 'Foo' in key combination 'ctrl\\+Foo'"),
        ("F13", "Unknown key name 'F13'"),
        ("hyper", "Unknown key name"),
        ("", "Empty key combination"),
        ("ctrl+", "Malformed key combination"),
        ("ctrl+a Delete", "Several keys separated by spaces"),
    ],
)
def test_parse_xdotool_combo_rejects(text: str, message: str) -> None:
    with pytest.raises(ComputerError, match=message):
        parse_xdotool_combo(text)


def test_parse_xdotool_sequence() -> None:
    assert parse_xdotool_sequence("ctrl+a Delete") == [["Control", "a"], ["Delete"]]
    assert parse_xdotool_sequence("Return") == [["Enter"]]
    assert parse_xdotool_sequence(" ") == [[" "]]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["CTRL", "L"], ["Control", "l"]),
        (["CTRL", "SHIFT", "T"], ["Control", "Shift", "T"]),
        (["ENTER"], ["Enter"]),
        (["RETURN"], ["Enter"]),
        (["ARROWDOWN"], ["ArrowDown"]),
        (["ARROWLEFT"], ["ArrowLeft"]),
        (["UP"], ["ArrowUp"]),
        (["CMD", "C"], ["Meta", "c"]),
        (["META"], ["Meta"]),
        (["SUPER"], ["Meta"]),
        (["WIN"], ["Meta"]),
        (["OPTION"], ["Alt"]),
        (["ALT", "F4"], ["Alt", "F4"]),
        (["SPACE"], [" "]),
        (["ESC"], ["Escape"]),
        (["ESCAPE"], ["Escape"]),
        (["BACKSPACE"], ["Backspace"]),
        (["DELETE"], ["Delete"]),
        (["DEL"], ["Delete"]),
        (["TAB"], ["Tab"]),
        (["PAGEDOWN"], ["PageDown"]),
        (["PAGE_UP"], ["PageUp"]),
        (["HOME"], ["Home"]),
        (["END"], ["End"]),
        (["A"], ["a"]),  # OpenAI spells plain letters in upper case
        (["SHIFT", "A"], ["Shift", "A"]),  # ... and a held Shift the capital
        (["CTRL+C"], ["Control", "c"]),
        (["/"], ["/"]),
        (["F1"], ["F1"]),
        (["CAPSLOCK"], ["CapsLock"]),
    ],
)
def test_parse_openai_keys(keys: list[str], expected: list[str]) -> None:
    assert parse_openai_keys(keys) == expected


@pytest.mark.parametrize("keys", [[], ["CTRL", "HYPER"], ["NOPE"]])
def test_parse_openai_keys_rejects(keys: list[str]) -> None:
    with pytest.raises(ComputerError):
        parse_openai_keys(keys)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, []),
        ("", []),
        ("shift", ["Shift"]),
        ("ctrl+shift", ["Control", "Shift"]),
        ("cmd", ["Meta"]),
        ("super", ["Meta"]),
        ("alt", ["Alt"]),
        ("Shift_L", ["Shift"]),
        ("shift+shift", ["Shift"]),
    ],
)
def test_parse_modifiers(text: str | None, expected: list[str]) -> None:
    assert parse_modifiers(text) == expected


@pytest.mark.parametrize("text", ["a", "ctrl+Return", "shift+Foo"])
def test_parse_modifiers_rejects_non_modifiers(text: str) -> None:
    with pytest.raises(ComputerError):
        parse_modifiers(text)


def test_every_alias_lands_on_a_normalized_name() -> None:
    for name in [*NAMED_KEYS, "ctrl", "Page_Down", "KP_9", "quotedbl", "space"]:
        assert is_normalized_key(normalize_key(name))
    check_normalized_keys(["Control", "Shift", " ", "a", "F12"])
    with pytest.raises(ComputerError, match="'ctrl'"):
        check_normalized_keys(["ctrl"])
    with pytest.raises(ComputerError):
        check_normalized_keys(["\n"])  # control characters are spelled "Enter"


@pytest.mark.parametrize("entry", ANTHROPIC_KEYS, ids=lambda e: e.id)
def test_every_documented_anthropic_key(entry: DocumentedKey) -> None:
    """key and hold_key take the same syntax; the chord reaches each backend in its names."""
    assert isinstance(entry.wire, str)
    key = anthropic_tools.to_action("key", {"text": entry.wire}, SCALE)
    hold = anthropic_tools.to_action("hold_key", {"text": entry.wire, "duration": 1}, SCALE)
    assert key == Key(keys=list(entry.keys))
    assert hold == HoldKey(keys=list(entry.keys), seconds=1)
    assert kernel_keys.chord(list(entry.keys)) == entry.kernel


@pytest.mark.parametrize("entry", OPENAI_KEYS, ids=lambda e: e.id)
def test_every_documented_openai_key(entry: DocumentedKey) -> None:
    assert isinstance(entry.wire, tuple)
    action = openai_tools.to_action({"type": "keypress", "keys": list(entry.wire)}, SCALE)
    assert action == Key(keys=list(entry.keys))
    assert kernel_keys.chord(list(entry.keys)) == entry.kernel


def test_documented_modifiers_held_during_mouse_actions() -> None:
    # The click/scroll `text` (Anthropic) and `keys` (OpenAI) name held modifiers.
    anthropic = [e for e in ANTHROPIC_KEYS if e.wire in ("ctrl", "shift", "ctrl+shift", "super")]
    openai = [e for e in OPENAI_KEYS if len(e.keys) == 1 and e.keys[0] in MODIFIER_KEYS]
    assert len(anthropic) == 4 and len(openai) == 7  # ALT CMD CTRL OPTION SHIFT SUPER WIN
    for entry in anthropic:
        assert isinstance(entry.wire, str)
        assert parse_modifiers(entry.wire) == list(entry.keys)
    for entry in openai:
        raw = {"type": "click", "button": "left", "x": 1, "y": 1, "keys": list(entry.wire)}
        click = openai_tools.to_action(raw, SCALE)
        assert isinstance(click, Click) and click.modifiers == list(entry.keys)
