"""Turn a stored log line (text with ANSI SGR colour codes) into safe HTML for the run page.

Log content is untrusted: an agent may print anything, including `<script>`. Every character of
the line goes through `html.escape`; the only markup emitted is our own `<span style=...>` and
`<mark>` elements, whose attribute values are built from fixed palettes and validated integers,
never from the log. Escape sequences other than SGR (cursor movement, OSC titles and links) are
dropped, as are other control characters, so they cannot garble the page either.
"""

from __future__ import annotations

import html
import itertools
import re
from dataclasses import dataclass, replace

# CSI ... final byte, OSC ... BEL/ST, and two-byte escapes.
_ESCAPE = re.compile(
    r"\x1b\[(?P<params>[0-?]*)[ -/]*(?P<final>[@-~])"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[@-Z\\-_]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# The 16 basic colours as Radix theme variables, so they read well in the light and dark theme.
_BASIC = ("gray", "red", "green", "amber", "blue", "plum", "cyan", "gray")
_BASIC_FG = (*tuple(f"var(--{name}-11)" for name in _BASIC[:7]), "var(--gray-12)")
_BRIGHT_FG = (*tuple(f"var(--{name}-9)" for name in _BASIC[:7]), "var(--gray-12)")
_BASIC_BG = tuple(f"var(--{name}-a5)" for name in _BASIC)
_BRIGHT_BG = tuple(f"var(--{name}-a7)" for name in _BASIC)
_CUBE = (0, 95, 135, 175, 215, 255)

MATCH_CLASS = "log-match"
CURRENT_MATCH_CLASS = "log-match log-match-current"


@dataclass(frozen=True, slots=True)
class Style:
    fg: str | None = None
    bg: str | None = None
    is_bold: bool = False
    is_dim: bool = False
    is_italic: bool = False
    is_underline: bool = False
    is_strike: bool = False

    def css(self) -> str:
        parts = []
        if self.fg:
            parts.append(f"color:{self.fg}")
        if self.bg:
            parts.append(f"background-color:{self.bg}")
        if self.is_bold:
            parts.append("font-weight:bold")
        if self.is_dim:
            parts.append("opacity:0.7")
        if self.is_italic:
            parts.append("font-style:italic")
        decorations = [
            name
            for name, on in (("underline", self.is_underline), ("line-through", self.is_strike))
            if on
        ]
        if decorations:
            parts.append("text-decoration:" + " ".join(decorations))
        return ";".join(parts)


PLAIN = Style()

# SGR codes that switch text attributes on or off: the Style fields each one sets.
_SGR_ATTRIBUTES: dict[int, dict[str, bool]] = {
    1: {"is_bold": True},
    2: {"is_dim": True},
    3: {"is_italic": True},
    4: {"is_underline": True},
    9: {"is_strike": True},
    22: {"is_bold": False, "is_dim": False},
    23: {"is_italic": False},
    24: {"is_underline": False},
    29: {"is_strike": False},
}


def _hex(red: int, green: int, blue: int) -> str:
    return f"#{red:02x}{green:02x}{blue:02x}"


def _color_256(index: int, *, is_background: bool) -> str | None:
    if not 0 <= index <= 255:
        return None
    if index < 8:
        return (_BASIC_BG if is_background else _BASIC_FG)[index]
    if index < 16:
        return (_BRIGHT_BG if is_background else _BRIGHT_FG)[index - 8]
    if index < 232:
        index -= 16
        return _hex(_CUBE[index // 36], _CUBE[(index // 6) % 6], _CUBE[index % 6])
    level = 8 + (index - 232) * 10
    return _hex(level, level, level)


def _extended(codes: list[int], at: int, *, is_background: bool) -> tuple[str | None, int]:
    """Read `5;n` or `2;r;g;b` after a 38/48; return the colour and how many codes it used."""
    if at < len(codes) and codes[at] == 5 and at + 1 < len(codes):
        return _color_256(codes[at + 1], is_background=is_background), 2
    if at < len(codes) and codes[at] == 2 and at + 3 < len(codes):
        rgb = codes[at + 1 : at + 4]
        if all(0 <= value <= 255 for value in rgb):
            return _hex(*rgb), 4
        return None, 4
    return None, len(codes) - at  # malformed: ignore the rest of the sequence


def apply_sgr(style: Style, params: str) -> Style:
    """The style after one `ESC [ params m` sequence."""
    try:
        codes = [int(part) if part else 0 for part in params.split(";")] if params else [0]
    except ValueError:
        return style  # private-use parameters (`<`, `=`, `>`, `?`): not SGR we understand
    index = 0
    while index < len(codes):
        code = codes[index]
        index += 1
        if code == 0:
            style = PLAIN
        elif code in _SGR_ATTRIBUTES:
            style = replace(style, **_SGR_ATTRIBUTES[code])
        elif 30 <= code <= 37:
            style = replace(style, fg=_BASIC_FG[code - 30])
        elif 90 <= code <= 97:
            style = replace(style, fg=_BRIGHT_FG[code - 90])
        elif 40 <= code <= 47:
            style = replace(style, bg=_BASIC_BG[code - 40])
        elif 100 <= code <= 107:
            style = replace(style, bg=_BRIGHT_BG[code - 100])
        elif code == 39:
            style = replace(style, fg=None)
        elif code == 49:
            style = replace(style, bg=None)
        elif code in (38, 48):
            color, used = _extended(codes, index, is_background=code == 48)
            index += used
            if color is not None:
                style = replace(style, **{"bg" if code == 48 else "fg": color})
    return style


def segments(line: str) -> list[tuple[str, Style]]:
    """The visible text of LINE in runs of one style, escape sequences removed."""
    runs: list[tuple[str, Style]] = []
    style = PLAIN
    position = 0
    for match in _ESCAPE.finditer(line):
        if match.start() > position:
            runs.append((line[position : match.start()], style))
        if match.group("final") == "m":
            style = apply_sgr(style, match.group("params") or "")
        position = match.end()
    if position < len(line):
        runs.append((line[position:], style))
    cleaned = [(_CONTROL.sub("", text), run_style) for text, run_style in runs]
    return [(text, run_style) for text, run_style in cleaned if text]


def plain_text(line: str) -> str:
    """LINE without escape sequences and control characters (what a reader sees)."""
    return "".join(text for text, _ in segments(line))


def _match_ranges(text: str, needle: str) -> list[tuple[int, int]]:
    if not needle:
        return []
    folded, wanted = text.casefold(), needle.casefold()
    if len(folded) != len(text):  # case folding changed lengths (ß → ss): match exactly instead
        folded, wanted = text, needle
    ranges, start = [], folded.find(wanted)
    while start >= 0:
        ranges.append((start, start + len(wanted)))
        start = folded.find(wanted, start + len(wanted))
    return ranges


def to_html(line: str, *, highlight: str = "", is_current: bool = False) -> str:
    """LINE as escaped HTML with coloured spans; occurrences of HIGHLIGHT (case-insensitive) in
    the visible text are wrapped in `<mark>` (the current search match gets a second class)."""
    runs = segments(line)
    text = "".join(part for part, _ in runs)
    ranges = _match_ranges(text, highlight)
    # Cut points: style boundaries and match boundaries.
    cuts = {0, len(text)}
    offset = 0
    for part, _ in runs:
        offset += len(part)
        cuts.add(offset)
    for start, end in ranges:
        cuts.update((start, end))
    ordered = sorted(cuts)
    styles: list[tuple[int, Style]] = []
    offset = 0
    for part, run_style in runs:
        styles.append((offset, run_style))
        offset += len(part)
    mark = CURRENT_MATCH_CLASS if is_current else MATCH_CLASS
    out: list[str] = []
    style_index = 0
    for start, end in itertools.pairwise(ordered):
        if start == end:
            continue
        while style_index + 1 < len(styles) and styles[style_index + 1][0] <= start:
            style_index += 1
        piece = html.escape(text[start:end], quote=True)
        css = styles[style_index][1].css() if styles else ""
        if css:
            piece = f'<span style="{css}">{piece}</span>'
        if any(match_start <= start and end <= match_end for match_start, match_end in ranges):
            piece = f'<mark class="{mark}">{piece}</mark>'
        out.append(piece)
    return "".join(out)
