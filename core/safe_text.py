"""One escaping path for every user-supplied string (class, dataset and file names, run ids, tags, query
parameters) on its way into something that renders markup.

    html_text(s)   -> for HTML: the report, anything under `unsafe_allow_html`
    md_text(s)     -> for Streamlit Markdown: st.markdown / caption / info / error / toast, widget, tab and
                      expander labels, metric labels, st.image captions, st.table cells
    md_code(s)     -> the same, shown as inline code (a backtick in `s` cannot close the code span)
    plotly_text(s) -> for Plotly's pseudo-HTML: trace and legend names, text labels, tick labels, titles
    tsv_cell(s)    -> for one cell of a TSV export (the TensorBoard projector's metadata.tsv)

Each returns text that displays `s` literally and can start no tag, link, handler, directive or block.
Strings that are shown as plain text (st.text, st.code, st.dataframe cells, selectbox options, a DOM
text node) need none of this: escaping them would show the escapes.
"""
from __future__ import annotations

import html
import re

# Backslash-escaped punctuation is literal text in CommonMark. Escaped: what can start markup anywhere in a
# line (emphasis, code, strikethrough, links and images, raw HTML and autolinks, entities, tables, LaTeX
# `$`; `_` unless inside a word, where it emphasises nothing), `:` before a letter or `/` (Streamlit's
# `:red[...]` / `:material/...:` directives, `https:` autolinks), `@` (e-mail autolinks) and the dot of
# `www.`; and at the start of the line, what opens a block (heading, quote, list). Other punctuation stays
# as it is, so messages read (and match) as written: `'`, `"`, `,`, `.`, `-`, `>`, `(`, `)`, `: `, `a_b`.
_MD_INLINE = re.compile(r"[\\`*~\[\]<&$|@]|(?<![^\W_])_|_(?![^\W_])|:(?=[A-Za-z/])|(?<=www)\.", re.IGNORECASE)
_MD_BLOCK_START = re.compile(r"^(\s*(?:\d{1,9}(?=[.)](?:\s|$)))?)([#>+.)-])")  # `# `, `> `, `- `, `+ `, `1. `, `1) `
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")  # a name is one line: no new block can start


def _one_line(value) -> str:
    return _LINE_BREAKS.sub(" ", str(value))


def html_text(value) -> str:
    """`value` as HTML text or an attribute value: `& < > " '` become entities, line breaks `&#10;`
    (so inside a Markdown HTML block no blank line can end the block)."""
    return html.escape(str(value), quote=True).replace("\r", "&#13;").replace("\n", "&#10;")


def md_text(value) -> str:
    """`value` as literal Streamlit Markdown text, for one line or a part of one (line breaks become spaces)."""
    text = _MD_INLINE.sub(lambda m: "\\" + m.group(0), _one_line(value))
    return _MD_BLOCK_START.sub(r"\1\\\2", text)


def md_code(value) -> str:
    """`value` as a Markdown inline code span, fenced by more backticks than any run inside it."""
    text = _one_line(value)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    # CommonMark strips one space from each side when both have one: add them when the text needs that
    pad = " " if text[:1] == "`" or text[-1:] == "`" or (text[:1] == " " and text[-1:] == " ") or not text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plotly_text(value) -> str:
    """`value` for Plotly's pseudo-HTML (names, text, ticks, titles): `& < >` become the entities Plotly
    decodes, so `<b>`, `<a href>` or `<br>` in a name are shown, never interpreted."""
    return html.escape(str(value), quote=False)


def tsv_cell(value) -> str:
    """`value` as one TSV cell: a tab or a line break in a name can add no column and no row."""
    return _LINE_BREAKS.sub(" ", str(value)).replace("\t", " ")
