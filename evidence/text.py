"""Text that people type and the log keeps: what is allowed in, and how it is shown.

Two rules, used on both sides of the wire:

- `check_text` is for fields a person writes on purpose (purposes, reasons, case
  references, names, staff codes): control and format characters (NUL, ESC,
  zero-width spaces, bidi overrides, line and paragraph separators, U+0085,
  unpaired surrogates) are refused, and a minimum length counts only visible
  characters, so ten spaces or ten zero-width spaces are not a reason.
- `neutral` is for text someone else chose and we must still record or print
  (a request path, a server's error message): every such character becomes a
  visible escape (``\\x1b``, ``\\u2028``) and the result is bounded, so a log
  entry or a terminal line can never carry an escape sequence, a line break the
  JSON Lines export would split on, or an unbounded blob.
"""

from __future__ import annotations

import unicodedata

# Cc control, Cf format (zero-width, bidi), Cs surrogates, Co private use, Cn unassigned,
# Zl/Zp line and paragraph separators. Zs (ordinary spaces) are fine inside text.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


class TextError(ValueError):
    """A text field holds characters it may not, or too little that can be seen."""


def forbidden(ch: str) -> bool:
    return unicodedata.category(ch) in _INVISIBLE


def visible_length(value: str) -> int:
    """Characters that show: not whitespace, not control or format characters."""
    return sum(1 for ch in value if not ch.isspace() and not forbidden(ch))


def check_text(value: str, *, name: str, min_visible: int = 1, max_length: int = 500, multiline: bool = False) -> str:
    """Return `value` stripped if it is acceptable text for `name`; raise TextError saying why not."""
    for ch in value:
        if forbidden(ch) and not (multiline and ch == "\n"):
            raise TextError(f"{name} may not contain control or invisible characters (found U+{ord(ch):04X})")
    value = value.strip()
    if len(value) > max_length:
        raise TextError(f"{name} is longer than {max_length} characters")
    if visible_length(value) < min_visible:
        unit = "character" if min_visible == 1 else "characters"
        raise TextError(f"{name} must have at least {min_visible} visible {unit}")
    return value


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def neutral(value: str, limit: int = 200) -> str:
    """A safe, bounded rendering of untrusted text: invisible characters escaped, at most `limit` characters."""
    out = "".join(_escape(ch) if forbidden(ch) or ch == "\\" else ch for ch in value)
    if len(out) > limit:
        out = out[:limit] + f"…(+{len(out) - limit})"
    return out


def printable(value: str) -> str:
    """Text for a terminal: like `neutral` (no escape sequence, bidi override or stray line break
    gets through), but unbounded, and tabs and newlines kept, since our own tables use them."""
    return "".join(_escape(ch) if forbidden(ch) and ch not in "\t\n" else ch for ch in value)
