"""`scatter()`: linked WebGL scatter panes with image thumbnails on hover (a Streamlit custom component).

Why a component: `st.plotly_chart` cannot show an image in a hover label. This one is a plain
index.html + main.js (no build step) using plotly.js from the installed plotly package, so it works
offline. What it does in the browser:
- hover a point: a floating thumbnail of that sample (+ label / prediction); the same sample is
  ringed in every other pane;
- box / lasso select: the selected samples are selected in every pane, and their ids come back;
- click a point: its id comes back (the page shows its nearest neighbours, which come back here
  as an overlay of rings).

The served folder is assembled once under EMBEDLAB_HOME/cache/components/ (index.html, main.js,
plotly.min.js) because Streamlit serves a component only from files inside its folder (no links
out). Thumbnail sprite sheets are written into the same folder, under thumbs/, so the browser can
fetch them lazily: nothing image-related travels in the payload.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

# the payload the browser draws is built in core (the benchmark measures it without importing the UI)
from core.scatter_payload import (AGREEMENT_COLOURS, COLOR_MODES, COMPARE_COLOR_MODES, CORRECT_COLOURS,  # noqa: F401
                                  agreement_categories, build_payload, categories, payload_bytes)

_FRONTEND = Path(__file__).parent / "frontend"  # the sources: index.html, main.js
COMPONENT_NAME = "embedlab_scatter"

_state: dict[str, Any] = {"root": None, "component": None}  # the served folder and the declared component, once per process


# ------------------------------------------------------------------------------ served folder
def served_root() -> Path:
    """The folder Streamlit serves for this component (created once per frontend version)."""
    if _state["root"] is not None:
        return _state["root"]
    import plotly

    from core.paths import home, subdir

    plotly_js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    files = {"index.html": _FRONTEND / "index.html", "main.js": _FRONTEND / "main.js", "plotly.min.js": plotly_js}
    h = hashlib.sha1()
    for name in ("index.html", "main.js"):
        h.update(files[name].read_bytes())
    h.update(plotly.__version__.encode())
    root = subdir(home(), "cache", "components") / f"scatter-{h.hexdigest()[:12]}"
    if not (root / "plotly.min.js").exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, src in files.items():
            shutil.copyfile(src, tmp / name)
        try:
            os.replace(tmp, root)
        except OSError:  # another process won the race: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    _state["root"] = root
    return root


def thumbs_for(data, ids: np.ndarray) -> dict:
    """Write the sprite sheets `ids` need (once per dataset) and describe them for the payload."""
    from core.thumbnails import tile_size, write_sheets

    tile = tile_size(data.images)
    sub = f"{data.fingerprint}-{tile}"
    meta = write_sheets(data.images, ids, served_root() / "thumbs" / sub, tile=tile)
    return {"base": f"thumbs/{sub}/", "tile": meta["tile"], "cols": meta["cols"], "per_sheet": meta["per_sheet"]}


# ---------------------------------------------------------------------------------- component
def _component():
    if _state["component"] is None:
        import streamlit.components.v1 as components

        _state["component"] = components.declare_component(COMPONENT_NAME, path=str(served_root()))
    return _state["component"]


def scatter(payload: dict, *, overlay: dict | None = None, key: str) -> dict | None:
    """Draw the panes; return {selection: {pane, ids} | None, click: {pane, id} | None} for this data
    (None until the user selects or clicks, and after the data changes)."""
    value = _component()(payload=payload, overlay=overlay, key=key, default=None)
    if not isinstance(value, dict) or value.get("data_key") != payload["data_key"]:
        return None
    return value
