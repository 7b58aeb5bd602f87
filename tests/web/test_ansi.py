"""ANSI SGR codes → escaped, styled HTML for the run page's log viewer."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from codexk8s.web import ansi

ESC = "\x1b"


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text += data


def test_plain_text_is_escaped() -> None:
    assert ansi.to_html("a < b && c > d \"q\" 'x'") == (
        "a &lt; b &amp;&amp; c &gt; d &quot;q&quot; &#x27;x&#x27;"
    )


@pytest.mark.parametrize(
    "line",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        f"{ESC}[31m<b onclick=alert(1)>red</b>{ESC}[0m",
        f'{ESC}[38;2;1;2;3m"><script>x</script>',
        f"{ESC}]8;;javascript:alert(1){ESC}\\link{ESC}]8;;{ESC}\\",
        f"{ESC}[31;<script>m text",
    ],
)
def test_log_content_never_becomes_markup(line: str) -> None:
    """Parsed as a browser would, the output holds only our span/mark elements with our
    attributes, and its text is exactly the line's visible text."""
    rendered = ansi.to_html(line, highlight="script")
    parser = Collector()
    parser.feed(rendered)
    parser.close()
    assert {tag for tag, _ in parser.tags} <= {"span", "mark"}
    for tag, attrs in parser.tags:
        (name, value), *rest = attrs
        assert not rest
        if tag == "mark":
            assert (name, value) == ("class", "log-match")
        else:
            assert name == "style" and re.fullmatch(r"[a-z0-9:;#()\-. ]+", value or "")
            assert "url" not in (value or "") and "expression" not in (value or "")
    assert parser.text == ansi.plain_text(line)


def test_basic_bright_and_reset() -> None:
    rendered = ansi.to_html(f"{ESC}[1;31mError{ESC}[0m: {ESC}[92mok{ESC}[39m plain")
    assert rendered == (
        '<span style="color:var(--red-11);font-weight:bold">Error</span>: '
        '<span style="color:var(--green-9)">ok</span> plain'
    )


def test_256_truecolor_background_and_attributes() -> None:
    assert ansi.to_html(f"{ESC}[38;5;208mo{ESC}[m") == '<span style="color:#ff8700">o</span>'
    assert ansi.to_html(f"{ESC}[38;5;244mg") == '<span style="color:#808080">g</span>'
    assert (
        ansi.to_html(f"{ESC}[48;2;16;32;48mb") == '<span style="background-color:#102030">b</span>'
    )
    assert ansi.to_html(f"{ESC}[3;4;9mx{ESC}[23;24;29my") == (
        '<span style="font-style:italic;text-decoration:underline line-through">x</span>y'
    )
    # Out-of-range or malformed colour parameters are ignored, not echoed.
    assert ansi.to_html(f"{ESC}[38;2;999;0;0mz") == "z"
    assert ansi.to_html(f"{ESC}[38;5mz") == "z"


def test_other_escapes_and_controls_are_dropped() -> None:
    line = f"{ESC}]0;window title\x07a{ESC}[2K{ESC}[1Gb\x00\x08c\td{ESC}"
    assert ansi.plain_text(line) == "abc\td"
    assert ansi.to_html(line) == "abc\td"


def test_highlight_is_case_insensitive_and_crosses_colour_boundaries() -> None:
    rendered = ansi.to_html(f"{ESC}[32mfoo Ba{ESC}[0mr baz", highlight="bar")
    assert rendered == (
        '<span style="color:var(--green-11)">foo </span>'
        '<mark class="log-match"><span style="color:var(--green-11)">Ba</span></mark>'
        '<mark class="log-match">r</mark> baz'
    )
    current = ansi.to_html("x & y", highlight="&", is_current=True)
    assert current == 'x <mark class="log-match log-match-current">&amp;</mark> y'
    assert ansi.to_html("<b>", highlight="b") == '&lt;<mark class="log-match">b</mark>&gt;'
