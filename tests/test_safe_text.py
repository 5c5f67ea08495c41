"""The one escaping path: each helper shows a hostile string literally in its context and lets it start
nothing there (checked with the renderers themselves where one is installed: markdown-it for CommonMark,
the stdlib HTML parser for HTML)."""
import html
import re
from html.parser import HTMLParser

import pytest

from core.safe_text import html_text, md_code, md_text, plotly_text, tsv_cell

HOSTILE = [
    "<img src=x onerror=window.top.__pwned=1>",
    '<iframe srcdoc="<script>parent.__pwned=1</script>">',
    "[click](javascript:alert(1))",
    "**bold**",
    "https://evil.example/x www.evil.example a@evil.example",
    ":red[red] :material/warning: $x^2$ ~~gone~~ `code`",
    "# heading\n\n- item\r\n1. one",
    "a\\*b &lt;b&gt; &amp; |x|y|",
]


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


@pytest.mark.parametrize("s", HOSTILE)
def test_html_text_is_literal_html(s):
    out = html_text(s)
    parser = _Collect()
    parser.feed(f"<p title='{out}'>{out}</p>")
    parser.close()
    assert parser.tags == ["p"]  # no tag of the user's, and the attribute was not closed
    assert "".join(parser.text).rstrip("\n") == s
    assert "\n" not in out and "<" not in out and "'" not in out


def _commonmark(text: str) -> str:
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py is not installed")
    return markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(text)


@pytest.mark.parametrize("s", HOSTILE)
def test_md_text_renders_as_one_plain_paragraph(s):
    out = md_text(s)
    rendered = _commonmark(out)
    assert rendered.startswith("<p>") and rendered.count("<") == 2, rendered  # <p>...</p>, nothing else
    parser = _Collect()
    parser.feed(rendered)
    assert "".join(parser.text).strip() == " ".join(s.split())  # literal, on one line
    # what CommonMark alone does not show: GFM autolinks and strikethrough, Streamlit's directives and LaTeX
    for marker in ("[", "]", "<", "*", "`", "~", "$", "|", "&", "@"):
        assert all(out[i - 1] == "\\" for i, ch in enumerate(out) if ch == marker), (marker, out)
    assert not re.search(r"(?<![\\\w])_|(?<!\\)_(?!\w)", out), out  # `_` emphasises only at a word's edge
    assert not re.search(r"(?<!\\):[A-Za-z/]|(?<!\\)https?:|www\.", out, re.IGNORECASE), out


def test_md_text_keeps_plain_words_and_messages_as_written():
    assert md_text("chats noirs 犬 été") == "chats noirs 犬 été"
    for message in ("holiday.zip refused: entry 'cats/../x.png' points outside the archive ('..'), at 14:22:33",
                    "20261201-222226-ce-cafa: it is interrupted now", "3.5 s, 5-fold", "lr must be > 0, not -1.0",
                    "unknown backbone 'vit_nonexistent_model'"):
        assert md_text(ValueError(message)) == message  # any value: exceptions, numbers
    assert md_text("a\n\nb\r\nc") == "a b c"  # one line: no new block can start


@pytest.mark.parametrize("s, shown", [("# title", "\\# title"), ("- item", "\\- item"), ("> quote", "\\> quote"),
                                      ("12. twelve", "12\\. twelve"), ("3) three", "3\\) three")])
def test_md_text_opens_no_block_at_the_start(s, shown):
    assert md_text(s) == shown
    assert _commonmark(shown) == f"<p>{html.escape(s, quote=False)}</p>\n"


@pytest.mark.parametrize("s", ["plain", "a`b", "``x``", "`", "x` [y](javascript:1) `", " spaced "])
def test_md_code_is_one_code_span_holding_the_text(s):
    rendered = _commonmark(md_code(s))
    parser = _Collect()
    parser.feed(rendered)
    assert parser.tags == ["p", "code"], rendered
    assert "".join(parser.text).rstrip("\n") == s
    if "`" not in s and s == s.strip():
        assert md_code(s) == f"`{s}`"  # the usual form when nothing needs more


def test_plotly_text_escapes_what_plotly_reads_as_markup():
    assert plotly_text('<b>x</b> & <a href="https://e">l</a>') == '&lt;b&gt;x&lt;/b&gt; &amp; &lt;a href="https://e"&gt;l&lt;/a&gt;'
    assert plotly_text(3) == "3" and plotly_text("été") == "été"


def test_tsv_cell_adds_no_column_and_no_row():
    cell = tsv_cell("a\tb\nc\r\nd\u2028e\x0bf")
    assert "\t" not in cell and len(cell.splitlines()) == 1 and cell == "a b c d e f"
