"""Hostile names and the checks that they stayed inert, shared by the unit, reliability and browser tests.

Not a test module. `HOSTILE_CLASSES` are valid class-folder names (no '/', so a zip can hold them), each
an attack on one renderer: HTML with a handler, an iframe whose srcdoc runs a script (the `&#47;` is the
closing tag's slash, decoded inside the attribute), a Markdown link, Markdown emphasis.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

HOSTILE_CLASSES = [
    "<img src=x onerror=window.top.__pwned=1>",
    '<iframe srcdoc="<script>parent.__pwned=1<&#47;script>">',
    "[click](javascript:alert(1))",
    "**bold**",
]
LIVE_TAGS = {"a", "img", "iframe", "script", "svg", "object", "embed", "style", "link", "meta", "form", "video", "audio",
             "math", "base"}  # tags a user string must never produce
_PLOTLY_TAG = re.compile(r"<\s*/?\s*[a-z]", re.IGNORECASE)  # Plotly's pseudo-HTML starts a tag here


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def tags_of(html: str) -> tuple[list[tuple[str, list]], str]:
    """(every start tag with its attributes, the text) of an HTML fragment; <script> bodies count as text."""
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser.tags, "".join(parser.text)


def live_markup(html: str) -> list[str]:
    """What in `html` could run or navigate: a live tag, or any on* handler or javascript: URL on any tag."""
    found = []
    for tag, attrs in tags_of(html)[0]:
        if tag in LIVE_TAGS:
            found.append(f"<{tag}>")
        for key, value in attrs:
            if key.startswith("on") or (value and value.strip().lower().startswith("javascript:")):
                found.append(f"<{tag} {key}={value!r}>")
    return found


def render_markdown(text: str) -> str:
    """CommonMark with raw HTML on (stricter than Streamlit, which drops raw HTML unless unsafe_allow_html)."""
    import markdown_it

    return markdown_it.MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)


def markdown_problems(text: str) -> list[str]:
    """Live markup that Markdown `text` renders to (a link counts: an escaped user string makes none)."""
    return live_markup(render_markdown(text))


def strings_in(obj) -> list[str]:
    """Every string inside a nested dict / list (a plotly figure's JSON)."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings_in(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in strings_in(v)]
    return []


def plotly_problems(figure_json: dict, allowed=("<extra>", "</extra>", "<b>", "</b>", "<br>")) -> list[str]:
    """Strings of a plotly figure that Plotly would read as markup beyond our own constant tags."""
    bad = []
    for s in strings_in(figure_json):
        rest = s
        for tag in allowed:
            rest = rest.replace(tag, "")
        if _PLOTLY_TAG.search(rest):
            bad.append(s)
    return bad
