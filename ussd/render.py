"""A dialogue Screen as Africa's Talking USSD text: `CON …` or `END …`, plain ASCII, <= 160 characters.

Telcos drop or garble anything else, so names typed by landlords (`Nyumba ya Mzee – Ruaka`, `Café`) are
folded to ASCII, and when a screen is too long the lines marked optional are left out (last first) while
the screen cannot fit otherwise, then the data lines (meter names) are shortened — never the option keys,
our own wording or the navigation line.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from core.dialogue.types import Screen
from core.shared.text import fold

LIMIT = 160
# Latin letters with no decomposition to ASCII, and the no-break space (folded by core.shared.text after).
ASCII_LETTERS = str.maketrans({"\u00a0": " ", "\u00df": "ss", "\u00e6": "ae", "\u00f8": "o"})
CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
SPACES = re.compile(r" {2,}")


def ascii_only(value: str) -> str:
    """Printable ASCII on one line: accents dropped, fancy punctuation made plain, the rest removed."""
    if not (value.isascii() and value.isprintable()):  # most text already is: nothing to fold, character by character
        value = CONTROL.sub(" ", fold(value.translate(ASCII_LETTERS), below=128, missing=""))
    return SPACES.sub(" ", value).strip()


@dataclass
class _Row:
    prefix: str  # an option's key, e.g. "1. ", never shortened
    text: str
    keep: int | None  # None: never shortened; else at least this many characters survive
    optional: bool = False  # may be left out when the screen cannot fit with it

    @property
    def shrinkable(self) -> bool:
        return self.keep is not None and len(self.text) > max(self.keep, 1)

    def __str__(self) -> str:
        return self.prefix + self.text


def _rows(screen: Screen) -> list[_Row]:
    rows = [_Row("", ascii_only(message), None) for message in (screen.error, screen.notice) if message]
    # Our own wording may span lines (the bilingual goodbyes); data never does.
    rows.append(_Row("", "\n".join(ascii_only(part) for part in screen.title.split("\n")), None))
    rows += [_Row("", ascii_only(line.text), line.keep, line.optional) for line in screen.lines]
    rows += [_Row(f"{option.key}. ", ascii_only(option.label), option.keep) for option in screen.options]
    if screen.nav:
        rows.append(_Row("", " ".join(f"{o.key}. {ascii_only(o.label)}" for o in screen.nav), None))
    return rows


def _length(head: str, rows: list[_Row]) -> int:
    return len(head) + sum(len(str(row)) for row in rows) + len(rows) - 1


def _shortest(head: str, rows: list[_Row]) -> int:
    """The screen's length with every data line shortened as far as it may be."""
    return _length(head, [_Row(row.prefix, row.text[:max(row.keep, 1)], None) if row.shrinkable else row
                          for row in rows])


def _shorten(text: str, target: int, keep: int) -> str:
    text = text[:target]
    while len(text) > keep and text[-1] in " ,.-":  # no dangling separators after a cut
        text = text[:-1]
    return text


# A Screen is frozen and hashable, and most hops show one of a few screens (the menu a new caller sees,
# the amount prompt): rendered once each, not on every hop of every session.
@functools.lru_cache(maxsize=1024)
def to_text(screen: Screen) -> str:
    head = "END " if screen.end else "CON "
    rows = _rows(screen)
    while _shortest(head, rows) > LIMIT and any(row.optional for row in rows):
        rows.remove([row for row in rows if row.optional][-1])
    while _length(head, rows) > LIMIT:
        candidates = [row for row in rows if row.shrinkable]
        if not candidates:
            break
        longest = max(candidates, key=lambda row: len(row.text))
        excess = _length(head, rows) - LIMIT
        # Shorten the longest data line, at most by what is too much and not below the next longest,
        # so that several long names end up evenly short rather than one of them gone.
        runner_up = max((len(row.text) for row in candidates if row is not longest), default=0)
        target = max(len(longest.text) - excess, min(runner_up, len(longest.text) - 1), longest.keep, 1)
        longest.text = _shorten(longest.text, target, longest.keep)
    text = head + "\n".join(str(row) for row in rows)
    return text[:LIMIT]  # last resort for wording too long to fit; the screen tests keep us from needing it
