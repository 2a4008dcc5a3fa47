"""Key names: provider spellings in, one backend-neutral convention out.

The normalized name of a key is its DOM `KeyboardEvent.key` value, which is
also a name Playwright's `keyboard.down/up/press` accepts as is: "Control",
"Shift", "Alt", "Meta", "Enter", "Tab", "Escape", "Backspace", "Delete",
"ArrowUp", "PageDown", "F5"..., and a printable key as its single character
(space is " "). Letters keep their case only when a key is pressed alone:
inside a chord the chord names the physical key, so a letter's case follows
Shift: lower case without it ("ctrl+A" and "ctrl+a" both mean select-all),
upper case with it ("ctrl+shift+t" -> Control, Shift, "T"), which is the key a
real keyboard reports. A lone "A" types a capital A.

Anthropic sends xdotool keysyms ("ctrl+shift+t", "Return", "Page_Down"),
OpenAI sends arrays of upper-case names (["CTRL", "L"], "ARROWDOWN"). An
unknown name raises ComputerError: pressing some other key instead would be
worse than telling the model.
"""

from __future__ import annotations

import re

from app.computers.base import ComputerError

MODIFIER_KEYS = ("Control", "Shift", "Alt", "Meta")

# Named (multi-character) keys, each also accepted under its own normalized name.
NAMED_KEYS = frozenset(
    {
        *MODIFIER_KEYS,
        "AltGraph",
        "Enter",
        "Tab",
        "Escape",
        "Backspace",
        "Delete",
        "Insert",
        "Home",
        "End",
        "PageUp",
        "PageDown",
        "ArrowUp",
        "ArrowDown",
        "ArrowLeft",
        "ArrowRight",
        "CapsLock",
        "NumLock",
        "ScrollLock",
        "Pause",
        "PrintScreen",
        "ContextMenu",
        "AudioVolumeMute",
        "AudioVolumeDown",
        "AudioVolumeUp",
        "MediaTrackNext",
        "MediaTrackPrevious",
        "MediaPlayPause",
        *(f"F{n}" for n in range(1, 13)),
    }
)

# Aliases, keyed by _fold(name): lower case without "_", "-" or spaces, so
# "Page_Down", "pagedown" and "PAGEDOWN" all meet. Covers xdotool keysyms
# (including the keypad KP_* family) and the names OpenAI's models emit.
_ALIASES: dict[str, str] = {
    # modifiers
    "ctrl": "Control",
    "controll": "Control",
    "controlr": "Control",
    "lctrl": "Control",
    "rctrl": "Control",
    "shiftl": "Shift",
    "shiftr": "Shift",
    "altl": "Alt",
    "altr": "Alt",
    "option": "Alt",
    "opt": "Alt",
    "isolevel3shift": "AltGraph",
    "cmd": "Meta",
    "command": "Meta",
    "super": "Meta",
    "superl": "Meta",
    "superr": "Meta",
    "metal": "Meta",
    "metar": "Meta",
    "win": "Meta",
    "windows": "Meta",
    "os": "Meta",
    # editing and navigation
    "return": "Enter",
    "kpenter": "Enter",
    "linefeed": "Enter",
    "isolefttab": "Tab",
    "esc": "Escape",
    "del": "Delete",
    "kpdelete": "Delete",
    "ins": "Insert",
    "kpinsert": "Insert",
    "kphome": "Home",
    "kpend": "End",
    "prior": "PageUp",
    "pgup": "PageUp",
    "kppageup": "PageUp",
    "kpprior": "PageUp",
    "next": "PageDown",
    "pgdn": "PageDown",
    "kppagedown": "PageDown",
    "kpnext": "PageDown",
    "up": "ArrowUp",
    "down": "ArrowDown",
    "left": "ArrowLeft",
    "right": "ArrowRight",
    "kpup": "ArrowUp",
    "kpdown": "ArrowDown",
    "kpleft": "ArrowLeft",
    "kpright": "ArrowRight",
    "print": "PrintScreen",
    "prtsc": "PrintScreen",
    "menu": "ContextMenu",
    "apps": "ContextMenu",
    "break": "Pause",
    "xf86audiomute": "AudioVolumeMute",
    "xf86audiolowervolume": "AudioVolumeDown",
    "xf86audioraisevolume": "AudioVolumeUp",
    "xf86audionext": "MediaTrackNext",
    "xf86audioprev": "MediaTrackPrevious",
    "xf86audioplay": "MediaPlayPause",
    # printable keys spelled as words (xdotool keysyms and OpenAI names)
    "space": " ",
    "kpspace": " ",
    "minus": "-",
    "kpsubtract": "-",
    "plus": "+",
    "kpadd": "+",
    "equal": "=",
    "kpequal": "=",
    "asterisk": "*",
    "kpmultiply": "*",
    "slash": "/",
    "kpdivide": "/",
    "period": ".",
    "kpdecimal": ".",
    "comma": ",",
    "kpseparator": ",",
    "backslash": "\\",
    "semicolon": ";",
    "colon": ":",
    "apostrophe": "'",
    "quoteright": "'",
    "quotedbl": '"',
    "grave": "`",
    "quoteleft": "`",
    "backquote": "`",
    "asciitilde": "~",
    "tilde": "~",
    "exclam": "!",
    "at": "@",
    "numbersign": "#",
    "dollar": "$",
    "percent": "%",
    "asciicircum": "^",
    "ampersand": "&",
    "parenleft": "(",
    "parenright": ")",
    "underscore": "_",
    "bracketleft": "[",
    "bracketright": "]",
    "braceleft": "{",
    "braceright": "}",
    "bar": "|",
    "less": "<",
    "greater": ">",
    "question": "?",
    **{f"kp{n}": str(n) for n in range(10)},
    **{name.lower(): name for name in NAMED_KEYS},
}

_FOLD_RE = re.compile(r"[\s_\-]")
_PLUS_SPACES_RE = re.compile(r"\s*\+\s*")
# Control characters a model may send as a "key": the keys that produce them.
_CONTROL_CHARS = {"\n": "Enter", "\r": "Enter", "\t": "Tab", "\x1b": "Escape", "\b": "Backspace"}


def _fold(name: str) -> str:
    return _FOLD_RE.sub("", name).lower()


def normalize_key(name: str, *, in_chord: bool = False) -> str:
    """One key name in any supported spelling -> its normalized name.

    Single characters stand for themselves (a letter is lowercased inside a
    chord, see the module docstring); anything else must be a known name.
    """
    if name in _CONTROL_CHARS:
        return _CONTROL_CHARS[name]
    if len(name) == 1:
        return name.lower() if in_chord and name.isascii() and name.isalpha() else name
    canonical = _ALIASES.get(_fold(name))
    if canonical is None:
        raise ComputerError(f"Unknown key name {name!r}")
    return canonical


def is_normalized_key(name: str) -> bool:
    """Whether `name` already follows the convention (what backends accept)."""
    return (len(name) == 1 and name.isprintable()) or name in NAMED_KEYS


def check_normalized_keys(keys: list[str]) -> None:
    """Raise ComputerError naming the first key that is not a normalized name."""
    for key in keys:
        if not is_normalized_key(key):
            raise ComputerError(f"Unknown key name {key!r}")


def _chord(names: list[str], source: str) -> list[str]:
    in_chord = len(names) > 1
    try:
        keys = [normalize_key(name, in_chord=in_chord) for name in names]
    except ComputerError as exc:
        raise ComputerError(f"{exc} in key combination {source!r}") from None
    if "Shift" in keys:
        # Shift+t reports "T" on a real keyboard; Playwright (and CDP) report what they
        # are given, so the chord must carry the capital for the page to see it.
        keys = [key.upper() if _is_letter(key) else key for key in keys]
    return keys


def _is_letter(key: str) -> bool:
    return len(key) == 1 and key.isascii() and key.isalpha()


def parse_xdotool_combo(text: str) -> list[str]:
    """One xdotool-style chord ("ctrl+shift+t", "Return", "ctrl++") -> normalized keys."""
    if text in _CONTROL_CHARS:
        return [_CONTROL_CHARS[text]]
    if text and not text.strip(" "):
        return [" "]  # the model sent the space character itself
    stripped = text.strip()
    if not stripped:
        raise ComputerError("Empty key combination")
    compact = _PLUS_SPACES_RE.sub("+", stripped)
    if re.search(r"\s", compact):
        raise ComputerError(
            f"Several keys separated by spaces in {text!r}; send one key combination per action"
        )
    return _chord(_split_plus(compact), text)


def parse_xdotool_sequence(text: str) -> list[list[str]]:
    """Whitespace-separated chords, pressed one after the other ("ctrl+a Delete").

    This is what `xdotool key` does with several arguments; each chord becomes
    its own Key action.
    """
    if text in _CONTROL_CHARS or (text and not text.strip(" ")):
        return [parse_xdotool_combo(text)]
    return [parse_xdotool_combo(part) for part in text.split()]


def _split_plus(text: str) -> list[str]:
    # A literal "+" key is written "plus" by xdotool, but models also write "ctrl++" or "+".
    if text == "+":
        return ["+"]
    trailing_plus = text.endswith("++")
    body = text[:-2] if trailing_plus else text
    names = [part.strip() for part in body.split("+")]
    if any(not name for name in names):
        raise ComputerError(f"Malformed key combination {text!r}")
    return [*names, "+"] if trailing_plus else names


def parse_openai_keys(keys: list[str]) -> list[str]:
    """An OpenAI keypress array (["CTRL", "L"], ["ENTER"]) -> normalized keys.

    OpenAI spells letters in upper case even when it means the plain key, so
    letters are lowercased here; a held "SHIFT" makes them capitals again.
    """
    if not keys:
        raise ComputerError("Empty key list")
    names: list[str] = []
    for key in keys:
        # Tolerate a combo squeezed into one element ("CTRL+C").
        names.extend(_split_plus(key) if len(key) > 1 and "+" in key else [key])
    return _chord([name.lower() if _is_letter(name) else name for name in names], "+".join(keys))


def parse_modifiers(text: str | None) -> list[str]:
    """Held modifiers of a click or scroll ("shift", "ctrl+shift") -> ["Control", "Shift"]."""
    if text is None or not text.strip():
        return []
    modifiers: list[str] = []
    for name in _split_plus(_PLUS_SPACES_RE.sub("+", text.strip())):
        key = normalize_key(name)
        if key not in MODIFIER_KEYS:
            raise ComputerError(f"{name!r} is not a modifier key (in {text!r})")
        if key not in modifiers:
            modifiers.append(key)
    return modifiers
