"""Text for channels that show only a small alphabet: USSD (ASCII), the statement PDF's built-in fonts
(Latin-1). Names and reasons that landlords type or paste are folded to it rather than garbled."""

from __future__ import annotations

import unicodedata

# Typography pasted from phones and word processors, in its plain form.
PLAIN_PUNCTUATION = str.maketrans({
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u2018": "'", "\u2019": "'", "\u201a": ",", "\u201c": '"', "\u201d": '"', "\u2026": "...",
    "\u2022": "*", "\u20ac": "EUR",
})


def fold(value: str, *, below: int, missing: str) -> str:
    """`value` with every character at or above code point `below` (128: ASCII, 256: Latin-1) made plain:
    punctuation as PLAIN_PUNCTUATION has it, a letter without its accent (`ź` -> `z`); one with no such
    form (another script, an emoji, `ł`) becomes `missing`."""
    if all(ord(ch) < below for ch in value):
        return value
    return "".join(_fold_char(ch, below, missing) for ch in value.translate(PLAIN_PUNCTUATION))


def _fold_char(ch: str, below: int, missing: str) -> str:
    if ord(ch) < below:
        return ch
    base = "".join(part for part in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(part))
    return base if base and all(ord(part) < below for part in base) else missing
