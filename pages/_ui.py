"""What the pages share: the process-wide store and job manager, labels, formatting, navigation.

Not a page itself (`st.navigation` in app.py lists the pages explicitly). The getters are
`st.cache_resource`, so every session of this server process talks to the same JobManager; tests
patch `get_manager` / `get_store` to inject a fake.
"""
from __future__ import annotations

import math
import re
import runpy
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from core import objectives, process_worker
from core.dataset_import import import_dataset, import_files
from core.errors import EmbedLabError
from core.jobs import JobManager
from core.paths import home
from core.store import RunStore

APP_SCRIPT = Path(__file__).resolve().parent.parent / "app.py"  # the router
PAGES = {  # page name -> script, as registered in app.py
    "train": "pages/train.py",
    "explore": "pages/explore.py",
    "compare": "pages/compare.py",
    "runs": "pages/runs.py",
    "learn": "pages/learn.py",
    "board": "pages/board.py",  # workshop mode, the instructor only
}
OBJECTIVE_LABELS = objectives.objective_labels()  # name -> label, from each objective's registry entry
OBJECTIVE_COLORS = objectives.objective_colours()  # name -> colour, likewise
STATUS_STYLE = {  # status -> (badge colour, material icon)
    "queued": ("gray", ":material/schedule:"),
    "running": ("blue", ":material/progress_activity:"),
    "finished": ("green", ":material/check_circle:"),
    "failed": ("red", ":material/error:"),
    "cancelled": ("orange", ":material/cancel:"),
    "interrupted": ("violet", ":material/pause_circle:"),
}


# ------------------------------------------------------------------------------ shared resources
def home_dir() -> str:
    return str(home())


@st.cache_resource(show_spinner=False)
def _store(root: str) -> RunStore:
    # recover=True once per process and home: runs a dead server left running become `interrupted`
    return RunStore(root, recover=True)


@st.cache_resource(show_spinner=False)
def _manager(root: str) -> JobManager:
    # EMBEDLAB_WORKERS (older name EMBEDLAB_MAX_RUNNING) runs at once; default one per CUDA GPU, 1 on a CPU.
    # EMBEDLAB_TRAIN_IN=process (default): each run trains in a child process, so the sessions' reruns never
    # take the GIL from it (core/process_worker.py); =thread: in a worker thread of this server
    return JobManager(_store(root), max_running=None, train_fn=process_worker.train_fn_from_env())


def get_store() -> RunStore:
    return _store(home_dir())


def get_manager() -> JobManager:
    return _manager(home_dir())


_routing = threading.local()  # `active` while app.py runs a page in this script thread


@contextmanager
def routed():
    """app.py wraps `page.run()` in this, so pages can tell they run inside the router."""
    _routing.active = True
    try:
        yield
    finally:
        _routing.active = False


def ensure_router() -> None:
    """Make sure the page runs inside app.py's router; every page calls this first thing.

    Until some session has run `st.navigation`, Streamlit treats the `pages/` folder as a legacy
    multipage app (always so under AppTest, which resets that mode on every run) and runs
    `pages/<name>.py` alone: no sidebar, no wide layout, this helper module listed as a page.
    Then we switch the legacy mode off, run app.py, which routes to this same page (page hashes
    derive from the url path) with the sidebar and page config, and stop the unrouted run.
    """
    if getattr(_routing, "active", False):
        return
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False
    runpy.run_path(str(APP_SCRIPT), run_name="__embedlab_app__")
    st.stop()


# ------------------------------------------------------------------------------------ formatting
def objective_label(objective: str) -> str:
    return objectives.objective_label(objective)


def run_labels(runs, *, short: bool = False) -> dict[str, str]:
    """{run_id: 'LaCViT · test_vit · digits · 81b8 · steps 20'} for a picker or a legend: core.report's run label
    (run_short with `short`) plus the settings in which these runs differ (core.settings_diff), so that two runs
    that look alike are told apart. `runs`: records or views (id, config, summary). Plain text: callers escape."""
    from core import report, settings_diff

    extra = settings_diff.differing_labels([(r.id, r.config, r.summary) for r in runs])
    base = report.run_short if short else report.run_label
    return {r.id: settings_diff.label_with(base(r.id, r.config), extra[r.id]) for r in runs}


def pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def duration(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def status_badge(status: str, *, text: str | None = None) -> None:
    color, icon = STATUS_STYLE.get(status, ("gray", None))
    st.badge(text or status, color=color, icon=icon)


def short_id(run_id: str) -> str:
    """20261130-142233-lacvit-3f2a -> 14:22:33 · 3f2a"""
    parts = run_id.split("-")
    if len(parts) >= 4 and len(parts[1]) == 6:
        t = parts[1]
        return f"{t[:2]}:{t[2:4]}:{t[4:]} · {parts[-1]}"
    return run_id


# ------------------------------------------------------------------------------------- uploads
def import_uploaded_zip(upload, name: str, root: str) -> tuple[str, str, str | None]:
    """Import an `st.file_uploader` zip as dataset `name` (default: the file's stem).

    Returns (kind, message, dataset name or None): kind is success, warning (some files skipped)
    or error (refused, nothing written), ready for st.success / st.warning / st.error.
    """
    if upload is None:
        return "error", "choose a .zip file first", None
    name = (name or "").strip() or default_dataset_name(Path(upload.name).stem)
    # messages name the user's file; the browser's name is only a label, never a path
    label = re.sub(r"[^\w. +-]", "_", Path(upload.name).name)[-100:].lstrip(".") or "upload.zip"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / label
        path.write_bytes(upload.getvalue())
        return _imported(lambda: import_dataset(path, name, root=Path(root)))


def import_uploaded_folder(uploads, name: str, root: str) -> tuple[str, str, str | None]:
    """Import an `st.file_uploader(accept_multiple_files="directory")` upload as dataset `name`
    (default: the chosen folder's name). Returns what `import_uploaded_zip` returns."""
    if not uploads:
        return "error", "choose a folder first (and wait until its files have uploaded)", None
    name = (name or "").strip() or default_dataset_name(_uploaded_folder_name(uploads))
    return _imported(lambda: import_files([(u.name, u.getvalue()) for u in uploads], name, root=Path(root)))


def _uploaded_folder_name(uploads) -> str:
    """The chosen folder's name: the one first path part all uploaded files share ('' if none)."""
    top = {u.name.replace("\\", "/").split("/", 1)[0] for u in uploads if "/" in u.name.replace("\\", "/")}
    return top.pop() if len(top) == 1 else ""


def upload_ready(uploads) -> str | None:
    """What the server holds of an upload, said before Import (Markdown-safe), or None when nothing is there.

    The browser uploads a folder file by file and tells the server only when all are in, so this line
    is the sign that Import will see them."""
    from core.safe_text import md_text

    if not uploads:
        return None
    if not isinstance(uploads, list):
        return f"{md_text(uploads.name)} is uploaded: press Import"
    folder = _uploaded_folder_name(uploads)
    where = f" from '{md_text(folder)}'" if folder else ""
    return f"{len(uploads)} file{'s' if len(uploads) != 1 else ''}{where} uploaded: press Import"


def default_dataset_name(text: str) -> str:
    """A file or folder name made into an allowed dataset name (the user can still type their own)."""
    return re.sub(r"[^\w .+-]", "-", text).strip(" .-")[:100] or "my-images"


def _imported(run_import) -> tuple[str, str, str | None]:
    try:
        report = run_import()
    except EmbedLabError as exc:
        return "error", str(exc), None
    return ("warning" if report.skipped else "success"), report.summary(), report.name


def import_uploaded_weights(upload, root: str) -> tuple[str, str | None]:
    """Keep an `st.file_uploader` weights file in EMBEDLAB_HOME/weights/ after a safe load.

    Returns (message, path or None): the path goes into TrainConfig.weights.
    """
    from core.backbones import import_weights_file

    if upload is None:
        return "choose a weights file first", None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload"
        path.write_bytes(upload.getvalue())
        try:
            kept = import_weights_file(path, upload.name, Path(root))
        except EmbedLabError as exc:
            return str(exc), None
    return f"{upload.name}: loaded safely, {kept.stat().st_size / 2**20:.1f} MB", str(kept)


# ------------------------------------------------------------------------------------ navigation
def open_in_explore(run_id: str) -> None:
    """Explore reads `st.session_state["explore_run"]` or the `run` query parameter."""
    st.session_state["explore_run"] = run_id
    st.switch_page(PAGES["explore"], query_params={"run": run_id})


def open_in_compare(run_ids: list[str]) -> None:
    """Compare reads `st.session_state["compare_runs"]` or repeated `run` query parameters."""
    st.session_state["compare_runs"] = list(run_ids)
    st.switch_page(PAGES["compare"], query_params=[("run", r) for r in run_ids])


def progressive_projection(key: str, method: str, fast, slow):
    """(data, the method shown): UMAP / t-SNE run in a background thread (core.projections.progressive);
    `fast()` (PCA) is shown at once and a once-a-second fragment reruns the page when `slow()` is ready."""
    from core.projections import METHOD_LABELS, pending, progressive
    from core.safe_text import md_text

    job = progressive(key, fast, slow)
    if job["error"]:
        st.warning(f"{METHOD_LABELS[method]} failed ({md_text(job['error'])}); showing PCA. Pick it again to retry.")
    elif not job["ready"]:
        started = time.time() - job["seconds"]

        @st.fragment(run_every=1.0)
        def _waiting():
            if not pending(key):
                st.rerun()  # the whole page, now with the finished projection
            st.caption(f":material/hourglass_top: {METHOD_LABELS[method]} computing… {time.time() - started:.0f} s "
                       "· showing PCA until it is ready (then it is cached on disk)")

        _waiting()
    return job["result"], method if job["ready"] else "pca"
