"""Normalized key names -> the X11 keysyms Kernel's Computer Controls API expects.

Kernel presses keys with xdotool on the browser's VM: `press_key(keys=[...])`
taps each item in turn, an item being a keysym ("Return", "Page_Down", "a")
or a "+"-joined chord ("Ctrl+Shift+t"), and `hold_keys` holds keysyms down
around a click, move, drag or scroll. Keysyms are case-sensitive and differ
from the DOM names the service normalizes to ("Enter" is no keysym at all,
"Backspace" must be "BackSpace"), and punctuation inside a chord has to be
spelled out ("Ctrl+minus"), so every key is translated here.
"""

from __future__ import annotations

from app.computers.base import ComputerError
from app.computers.keys import check_normalized_keys

# Modifiers use the spellings Kernel documents ("Ctrl", "Shift", "Alt");
# xdotool resolves them (and "Super") to the left-hand keysym.
_NAMED: dict[str, str] = {
    "Control": "Ctrl",
    "Shift": "Shift",
    "Alt": "Alt",
    "Meta": "Super",
    "AltGraph": "ISO_Level3_Shift",
    "Enter": "Return",
    "Tab": "Tab",
    "Escape": "Escape",
    "Backspace": "BackSpace",
    "Delete": "Delete",
    "Insert": "Insert",
    "Home": "Home",
    "End": "End",
    "PageUp": "Page_Up",
    "PageDown": "Page_Down",
    "ArrowUp": "Up",
    "ArrowDown": "Down",
    "ArrowLeft": "Left",
    "ArrowRight": "Right",
    "CapsLock": "Caps_Lock",
    "NumLock": "Num_Lock",
    "ScrollLock": "Scroll_Lock",
    "Pause": "Pause",
    "PrintScreen": "Print",
    "ContextMenu": "Menu",
    "AudioVolumeMute": "XF86AudioMute",
    "AudioVolumeDown": "XF86AudioLowerVolume",
    "AudioVolumeUp": "XF86AudioRaiseVolume",
    "MediaTrackNext": "XF86AudioNext",
    "MediaTrackPrevious": "XF86AudioPrev",
    "MediaPlayPause": "XF86AudioPlay",
    **{f"F{n}": f"F{n}" for n in range(1, 13)},
}

# Printable ASCII that is not a letter or digit: its X11 keysym name.
_PUNCTUATION: dict[str, str] = {
    " ": "space",
    "!": "exclam",
    '"': "quotedbl",
    "#": "numbersign",
    "$": "dollar",
    "%": "percent",
    "&": "ampersand",
    "'": "apostrophe",
    "(": "parenleft",
    ")": "parenright",
    "*": "asterisk",
    "+": "plus",
    ",": "comma",
    "-": "minus",
    ".": "period",
    "/": "slash",
    ":": "colon",
    ";": "semicolon",
    "<": "less",
    "=": "equal",
    ">": "greater",
    "?": "question",
    "@": "at",
    "[": "bracketleft",
    "\\": "backslash",
    "]": "bracketright",
    "^": "asciicircum",
    "_": "underscore",
    "`": "grave",
    "{": "braceleft",
    "|": "bar",
    "}": "braceright",
    "~": "asciitilde",
}


def keysym(key: str) -> str:
    """One normalized key name -> its keysym (ComputerError when there is none)."""
    named = _NAMED.get(key)
    if named is not None:
        return named
    if len(key) == 1:
        if key.isascii() and key.isalnum():
            return key
        if key in _PUNCTUATION:
            return _PUNCTUATION[key]
        if key.isprintable():
            # Xlib's Unicode keysym spelling; xdotool binds it to a spare keycode,
            # so characters missing from the VM's keyboard layout still arrive.
            return f"U{ord(key):04X}"
    raise ComputerError(f"Unknown key name {key!r}")


def chord(keys: list[str]) -> str:
    """Normalized keys pressed together -> one press_key item ("Ctrl+Shift+t").

    Inside a chord a letter names the physical key, whose keysym is the lower-case
    one; a Shift in the chord makes the capital (Kernel documents "Ctrl+Shift+Tab",
    "Ctrl+t"). A lone letter keeps its case: xdotool adds Shift for "A" itself.
    """
    check_normalized_keys(keys)
    if len(keys) > 1:
        keys = [k.lower() if len(k) == 1 and k.isascii() and k.isalpha() else k for k in keys]
    return "+".join(keysym(key) for key in keys)


def hold_keys(keys: list[str]) -> list[str]:
    """Keys held during a mouse action -> the keysyms of `hold_keys`."""
    check_normalized_keys(keys)
    return [keysym(key) for key in keys]
