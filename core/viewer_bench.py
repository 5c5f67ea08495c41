"""What browsers on the Train page cost the training they watch, and a room of sessions on one server.

    python -m core.viewer_bench                       # both, full size (about 5 minutes on 2 cores)
    python -m core.viewer_bench --quick --json        # a small form: viewers 0 and 1, 3 sessions

`viewer_benchmark` starts one real `streamlit run app.py` (127.0.0.1, its own EMBEDLAB_HOME, offline,
no projection warm-up), starts one CE run through the Train page as a user would, then opens N headless
Chromium pages on that run's Train page (the link `?runs=<id>`, so each shows the live curves) and
measures the run's steps/s over a fixed window for each N. Chromium runs at the lowest CPU priority
(`nice -n 19` through a wrapper script), so what slows the run is the server's work per viewer, not the
browsers' own drawing. Steps/s comes from the run's own clock: the (step, elapsed) pairs its worker
writes to the store about once a second.

`load_test` opens `sessions` sessions on one server; each fills the form, starts a tiny run, polls it
on the page's own timer until it finishes and reloads the page; then every run must be in the store,
finished, once, and every page load must have answered. By default the sessions are websocket tabs
(core/st_client.py: Streamlit's browser protocol without a renderer), each a person of a workshop with
their own name cookie: 20 Chromium renderers on the same 2 cores measure Chromium, not the server
(`--clients browser` runs them anyway, in single-user mode). Standalone on purpose (imports nothing
from core.bench / core.cli).
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import logging
import urllib.request
from urllib.parse import quote
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent  # the repository: app.py lives here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
START_TIMEOUT_S = 90  # the server imports torch, timm and open_clip before its first page
PAGE_TIMEOUT_MS = 120_000  # a page on a loaded 2-core box, with a run training beside it
MIN_SAMPLES = 3  # progress points a window needs (two intervals of the run's own clock)
BROWSER_NICE = 19  # the lowest CPU priority: the browsers' drawing must not count as the server's cost


class BenchError(RuntimeError):
    """The benchmark could not measure (no chromium / playwright, the server or the run failed)."""


# ------------------------------------------------------------------------------------- the server
@dataclass
class Server:
    url: str
    home: Path
    proc: subprocess.Popen
    log: Path


@contextmanager
def serve(home: Path, log: Path, *, extra_env: dict | None = None, script: Path = ROOT / "app.py"):
    """`streamlit run app.py` (or another `script`) on a free 127.0.0.1 port with its own EMBEDLAB_HOME;
    yields a `Server`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "EMBEDLAB_HOME": str(home), "EMBEDLAB_OFFLINE": "1", "EMBEDLAB_PROJECTION_WARMUP": "0",
           "CUDA_VISIBLE_DEVICES": "", **(extra_env or {})}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise BenchError(f"streamlit exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise BenchError(f"streamlit did not answer in {START_TIMEOUT_S} s: {log.read_text()[-2000:]}")
            time.sleep(0.25)
        yield Server(url, Path(home), proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _niced_chromium(folder: Path) -> str:
    """A wrapper that execs chromium at nice 19 (its renderers inherit it); Playwright's pipe fds pass through."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise BenchError("chromium is not installed (apt-get install chromium)")
    wrapper = folder / "chromium-nice"
    wrapper.write_text(f'#!/bin/sh\nexec nice -n {BROWSER_NICE} "{chromium}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _async_playwright():
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        raise BenchError("playwright is not installed") from exc
    return async_playwright


# ------------------------------------------------------------------------------ reading the machine
def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (all its threads), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(root: int, exclude: int) -> list[int]:
    """Pids below `root` (children, grandchildren, ...) outside the subtree of `exclude`."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    out = []
    for pid in parent:
        p, chain = pid, []
        while p in parent and p not in (root, exclude, 0, 1):
            chain.append(p)
            p = parent[p]
        if p == root and pid != root:
            out.append(pid)
    return out


def _browser_nice(pid: int) -> int | None:
    """The nice value of `pid` if it is a chromium process (None otherwise)."""
    try:
        name, _, rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
        return int(rest.split()[16]) if "chrom" in name.lower() else None
    except (OSError, IndexError, ValueError):
        return None


def _renice_browsers(server_pid: int, nice: int = BROWSER_NICE) -> list[int]:
    """Put every thread of every chromium process below us at `nice`; returns the processes' nice values.

    The wrapper's `nice -n 19` is not enough where the benchmark runs as root: chromium raises its own
    browser and GPU threads (nice -8) and sets renderer threads itself, so the threads are re-niced
    before each window. Pages are opened at nice 0 (root may raise it back): at 19 on a busy machine a
    new page can take minutes to draw, which is not what is measured."""
    values = []
    for pid in _descendants(os.getpid(), server_pid):
        if _browser_nice(pid) is None:
            continue
        for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
            try:
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
            except OSError:  # the thread ended meanwhile
                pass
        values.append(_browser_nice(pid))
    return values


def _load() -> float:
    return os.getloadavg()[0]


# --------------------------------------------------------------------------- driving the Train page
async def _settled(page, selector: str) -> None:
    """Wait until a rerun in flight has replaced the old copy of a widget (one element left)."""
    await page.wait_for_function(f"document.querySelectorAll('{selector}').length === 1", timeout=PAGE_TIMEOUT_MS)


async def _pick(page, key: str, text: str, tries: int = 4) -> None:
    """Open the searchable select `key`, type to filter, click the option that starts with `text`; a rerun
    that redraws the select closed between the click and the typing means: close it and start again."""
    from playwright.async_api import Error

    option = page.get_by_role("option", name=re.compile(rf"^{re.escape(text)} —"))
    for attempt in range(tries):
        try:
            await _settled(page, f".st-key-{key}")
            await page.locator(f".st-key-{key}").click()
            await page.keyboard.type(text)
            await option.click(timeout=20_000)
            return
        except Error:
            if attempt == tries - 1:
                raise
            await page.keyboard.press("Escape")
            await page.wait_for_timeout(1_000)


async def _set_number(page, key: str, value) -> None:
    """Type into a number input; retried while a rerun in flight redraws the widget."""
    from playwright.async_api import Error

    field = page.locator(f".st-key-{key} input")
    for _ in range(10):
        try:
            await _settled(page, f".st-key-{key} input")
            await field.fill(str(value))
            await field.press("Enter")
            await page.wait_for_timeout(800)
            if await field.input_value() == str(value):
                return
        except Error:  # detached or duplicated mid-rerun: try again
            await page.wait_for_timeout(400)
    raise BenchError(f"{key} did not take the value {value}")


async def start_run(page, url: str, *, backbone: str | None, dataset: str | None, steps: int | None = None,
                    eval_per_class: int | None = None) -> str:
    """Fill the Train form for one CE run (clicks and typing, as a user) and press Start; returns the run id
    (the page's URL names the batch it started)."""
    await page.goto(url)
    await page.get_by_role("button", name=re.compile(r"^Start \d runs?$")).wait_for(timeout=PAGE_TIMEOUT_MS)
    if backbone:
        await _pick(page, "backbone", backbone)
    if dataset:
        await _pick(page, "dataset", dataset)
    for label in ("LaCViT", "FLYP"):
        await page.get_by_role("button", name=f"Remove {label}").click()
        await page.wait_for_timeout(300)
    if steps is not None:
        await _set_number(page, "steps", steps)
    if eval_per_class is not None:
        await page.get_by_text("Advanced settings").click()
        await _set_number(page, "eval_per_class", eval_per_class)
        await page.get_by_text("Advanced settings").click()
    start = page.get_by_role("button", name="Start 1 run")
    await start.wait_for(timeout=PAGE_TIMEOUT_MS)
    await page.wait_for_timeout(500)  # let the last input's rerun settle
    await start.click()
    await page.wait_for_url(re.compile(r"[?&]runs="), timeout=PAGE_TIMEOUT_MS)
    return re.search(r"[?&]runs=([^&#]+)", page.url).group(1)


# ------------------------------------------------------------------------------- viewers vs steps/s
async def _open_viewer(browser, url: str, run_id: str):
    ctx = await browser.new_context(viewport={"width": 1440, "height": 1800})
    page = await ctx.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        await page.goto(f"{url}?runs={run_id}")
        await page.locator(".st-key-live_loss .scatterlayer .trace").first.wait_for(timeout=PAGE_TIMEOUT_MS)
        ctx.drawn = True
    except Exception:  # noqa: BLE001 - a page still loading on a busy machine keeps polling: counted, not fatal
        ctx.drawn = False
    return ctx


async def _shown_step(ctx) -> int:
    """The step a viewer's progress bar shows now (-1 when none is drawn)."""
    try:
        text = await ctx.pages[0].locator("[data-testid=stProgress]").first.inner_text(timeout=5_000)
        return int(re.search(r"step (\d+)/", text).group(1))
    except Exception:  # noqa: BLE001 - redrawn meanwhile, or starved: counts as not updated
        return -1


async def _window(store, run_id: str, seconds: float, server_pid: int) -> dict:
    """The run's steps/s over `seconds`, from the (step, elapsed) pairs its worker writes to the store: at most
    once a second, and every total/LOG_POINTS steps (core/train.py), so on a slow machine a long run logs
    rarely; the window then grows, up to 4x, until it holds MIN_SAMPLES points."""
    p = store.get(run_id).progress or {}
    # the last point logged before the window opens: with one more inside it, a rate over a known span
    samples: list[tuple[int, float]] = [(int(p["step"]), float(p["elapsed"]))] if p.get("elapsed") is not None else []
    cpu0, t0, load0 = _cpu_s(server_pid), time.monotonic(), _load()
    browsers = _descendants(os.getpid(), server_pid)
    bcpu0 = sum(_cpu_s(p) for p in browsers)
    while (time.monotonic() - t0 < seconds
           or (len(samples) < MIN_SAMPLES and time.monotonic() - t0 < 4 * seconds)):
        p = store.get(run_id).progress or {}
        if p.get("step") is not None and p.get("elapsed") is not None and (not samples or p["step"] != samples[-1][0]):
            samples.append((int(p["step"]), float(p["elapsed"])))
        await asyncio.sleep(0.2)
    wall = time.monotonic() - t0
    browsers = _descendants(os.getpid(), server_pid)
    out = {"server_cpu": (_cpu_s(server_pid) - cpu0) / wall, "browser_cpu": (sum(_cpu_s(p) for p in browsers) - bcpu0) / wall,
           "load": round((load0 + _load()) / 2, 2), "samples": len(samples)}
    if len(samples) < 2:  # train() logs ~LOG_POINTS points per run: a long budget logs rarely
        total = (store.get(run_id).config or {}).get("steps") or 0
        bound = max(1, total // 200) / wall  # fewer steps than one log interval in the whole window
        _logger.warning("run %s logged no progress in %.0f s: under %.2f steps/s", run_id, wall, bound)
        out.update(steps_per_s=0.0, median_steps_per_s=0.0, steps=0, below=bound)
        return out
    (s0, e0), (s1, e1) = samples[0], samples[-1]
    rates = [(b[0] - a[0]) / (b[1] - a[1]) for a, b in zip(samples, samples[1:]) if b[1] > a[1]]
    out.update(steps_per_s=(s1 - s0) / (e1 - e0), median_steps_per_s=statistics.median(rates), steps=s1 - s0)
    return out


async def _viewer_benchmark(viewers, *, window_s, settle_s, backbone, dataset, steps, eval_per_class, home, log,
                            repeat_baseline) -> dict:
    from .store import RunStore

    async_playwright = _async_playwright()
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp, serve(home, log) as server:
        executable = _niced_chromium(Path(tmp))
        store = RunStore(server.home)
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            driver = await browser.new_context(viewport={"width": 1440, "height": 1800})
            page = await driver.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            try:
                run_id = await start_run(page, server.url, backbone=backbone, dataset=dataset, steps=steps,
                                         eval_per_class=eval_per_class)
            except Exception:
                await page.screenshot(path=str(log.with_suffix(".start-failed.png")), full_page=True)
                raise
            await driver.close()  # N = 0 means no browser on the Train page at all
            deadline = time.monotonic() + 600
            while (store.get(run_id).progress or {}).get("step", 0) < 2:  # past the prepare phase (feature cache)
                if store.get(run_id).status not in ("queued", "running") or time.monotonic() > deadline:
                    raise BenchError(f"run {run_id} did not start training: {store.get(run_id).status}, "
                                     f"{store.get(run_id).error}")
                await asyncio.sleep(0.5)
            nice: list = []
            order = list(viewers) + ([0] if repeat_baseline and 0 in viewers and viewers[-1] != 0 else [])
            open_: list = []
            try:
                for n in order:
                    while len(open_) > n:
                        await open_.pop().close()
                    if len(open_) < n:
                        _renice_browsers(server.proc.pid, 0)
                        open_ += await asyncio.gather(*(_open_viewer(browser, server.url, run_id)
                                                        for _ in range(n - len(open_))))
                    nice += _renice_browsers(server.proc.pid)
                    await asyncio.sleep(settle_s)
                    shown0 = await asyncio.gather(*(_shown_step(c) for c in open_))
                    if store.get(run_id).status != "running":
                        raise BenchError(f"run {run_id} stopped before the windows ended ({store.get(run_id).status}): "
                                         "give it more steps")
                    window = await _window(store, run_id, window_s, server.proc.pid)
                    shown1 = await asyncio.gather(*(_shown_step(c) for c in open_))
                    # pages whose progress bar moved during the window: the viewers really polled at nice 19
                    window["pages_updated"] = sum(b > a for a, b in zip(shown0, shown1))
                    window["pages_drawn"] = sum(getattr(c, "drawn", False) for c in open_)
                    results.append({"viewers": n, **window})
                    print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # partial results survive a failure
            finally:
                for ctx in open_:
                    await ctx.close()
                await browser.close()
            store.request_cancel(run_id)  # the run was only the thing to measure
            trained = store.get(run_id).progress.get("step", 0)
    base = [r["steps_per_s"] for r in results if r["viewers"] == 0]
    baseline = statistics.mean(base) if base else float("nan")
    rows = {}
    for r in results:
        row = rows.setdefault(r["viewers"], {"steps_per_s": [], "median_steps_per_s": [], "server_cpu": [],
                                             "browser_cpu": [], "load": [], "pages_updated": []})
        for k in row:
            row[k].append(r[k])
    table = {n: {k: statistics.mean(v) for k, v in row.items()} for n, row in rows.items()}
    for row in table.values():
        row["ratio"] = row["steps_per_s"] / baseline
    return {"run_id": run_id, "trained_steps": trained, "window_s": window_s, "settle_s": settle_s,
            "backbone": backbone or "auto", "dataset": dataset or "default", "baseline_steps_per_s": baseline,
            "browser_nice": sorted({n for n in nice if n is not None}), "windows": results,
            "viewers": {str(n): row for n, row in table.items()},
            "ratio_4": table[4]["ratio"] if 4 in table else None, "load_average": os.getloadavg(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)")}


def run_async(coro):
    """asyncio.run, also from a thread whose event loop is already running (a sync Playwright session in the
    same process, e.g. the test suite's browser fixtures): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def viewer_benchmark(viewers=(0, 1, 2, 4, 8), *, window_s: float = 20.0, settle_s: float = 5.0,
                     backbone: str | None = "test_vit", dataset: str | None = "digits", steps: int = 40_000,
                     eval_per_class: int | None = 20, home: Path | None = None, log: Path | None = None,
                     repeat_baseline: bool = True) -> dict:
    """Steps/s of one run training in the server with N browsers on its Train page, for each N.

    Args:
        viewers: how many browsers watch, one window each, in this order (0 again at the end when
            `repeat_baseline`: the baseline is the mean of both, so a drift of the machine shows).
        window_s: seconds measured per N; settle_s: seconds after the pages have drawn, before it.
        backbone / dataset: the run's (None = the form's defaults: the offline default backbone, Fashion-MNIST);
            test_vit's last block on cached features is the hardest case: short steps, mostly Python, so any
            work the UI does in the server's process shows in steps/s.
        steps: the run's budget: enough for every window (the run is cancelled after the last).
        eval_per_class: validation images per class (small: evaluations are pauses unrelated to viewers).
        home / log: the server's EMBEDLAB_HOME and log file (default: a temporary folder).

    Returns: {"viewers": {N: {steps_per_s, median_steps_per_s, ratio, server_cpu, browser_cpu, load}},
    "baseline_steps_per_s", "ratio_4", "windows" (each window), "browser_nice", "load_average", ...}.
    """
    if home is None:
        with tempfile.TemporaryDirectory(prefix="embedlab-viewers-") as tmp:
            return viewer_benchmark(viewers, window_s=window_s, settle_s=settle_s, backbone=backbone, dataset=dataset,
                                    steps=steps, eval_per_class=eval_per_class, home=Path(tmp) / "home",
                                    log=log or Path(tmp) / "server.log", repeat_baseline=repeat_baseline)
    Path(home).mkdir(parents=True, exist_ok=True)
    return run_async(_viewer_benchmark(tuple(viewers), window_s=window_s, settle_s=settle_s, backbone=backbone,
                                         dataset=dataset, steps=steps, eval_per_class=eval_per_class, home=Path(home),
                                         log=Path(log or Path(home) / "server.log"), repeat_baseline=repeat_baseline))


# ------------------------------------------------------------------------------------- load test
WS_CLIENTS = "websocket"  # StreamlitSession tabs (core/st_client.py): the protocol a browser speaks, no renderer
BROWSER_CLIENTS = "browser"  # headless Chromium contexts (one niced browser): renderers share the cores


def _p95(xs: list[float]) -> float | None:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))] if xs else None


async def _browser_session(i: int, browser, url: str, *, backbone, dataset, steps, timeout_s) -> dict:
    ctx = await browser.new_context(viewport={"width": 1280, "height": 1600})
    page = await ctx.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    out: dict = {"session": i, "page_s": [], "poll_s": [], "error": None, "run_id": None}
    try:
        t0 = time.perf_counter()
        run_id = await start_run(page, url, backbone=backbone, dataset=dataset, steps=steps)
        out["run_id"] = run_id
        out["start_s"] = time.perf_counter() - t0  # load, fill the form, Start, the batch named in the URL
        # watching: the live panel shows the run's card until it has its final numbers
        await page.get_by_role("button", name="Explore").first.wait_for(timeout=timeout_s * 1000)
        out["watched_s"] = time.perf_counter() - t0
        for _ in range(2):  # every page answers: a reload (the link) and a fresh load of the Train page
            t1 = time.perf_counter()
            await page.goto(f"{url}?runs={run_id}")
            await page.get_by_role("button", name="Explore").first.wait_for(timeout=PAGE_TIMEOUT_MS)
            out["page_s"].append(time.perf_counter() - t1)
    except Exception as exc:  # noqa: BLE001 - one session's failure is a finding, not the end of the test
        out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await ctx.close()
    return out


def _person(i: int) -> dict[str, str]:
    """The cookies of the i-th person of the room, as their browser keeps them after they gave a name."""
    import uuid

    return {"embedlab_owner": uuid.UUID(int=i + 1).hex, "embedlab_name": quote(f"Student {i + 1:02d}")}


def _check(answer, what: str) -> None:
    from .st_client import SessionError

    if answer.exceptions:
        raise SessionError(f"{what}: the page shows {answer.exceptions[0]}")


def _started_run(answer, query_string: str) -> str:
    """The run Start queued: named in the URL (single-user mode), or in workshop mode the one card on the
    page this person may cancel (a fresh person has no other run; others' cards offer no Cancel)."""
    from .st_client import SessionError

    match = re.search(r"(?:^|&)runs=([^&#]+)", query_string)
    if match:
        return match.group(1)
    own = {el.key.removeprefix("cancel-") for el in answer.elements if el.key and el.key.startswith("cancel-")}
    if len(own) != 1:
        raise SessionError(f"Start left {len(own)} runs of this person on the page, not 1")
    return own.pop()


async def _start_from_the_form(tab, *, backbone, dataset, steps) -> tuple[str, float]:
    """Load the Train page, fill the form (each change a rerun, as a browser sends it), press Start.
    Returns the run id and the first load's answer time."""
    from .st_client import SessionError

    answer = await tab.load()
    _check(answer, "the first load")
    first_load_s = answer.seconds
    for key, value in (("backbone", backbone), ("dataset", dataset), ("objectives", ["ce"]), ("steps", steps)):
        if value is not None:
            answer = await tab.set(key, value)
            _check(answer, f"setting {key}")
    start = answer.find(key="start")
    if start is None or start.label != "Start 1 run":
        raise SessionError(f"the form offers {start.label if start else 'no Start button'!r}, not 'Start 1 run'")
    answer = await tab.click("start")
    _check(answer, "Start")
    return _started_run(answer, tab.query_string), first_load_s


async def _poll_until(tab, key: str, deadline: float, poll_s: list[float]) -> None:
    """Poll on the page's own fragment timer until an answer holds the element `key`."""
    from .st_client import SessionError

    while True:
        interval = min(tab.fragments.values(), default=1.0)
        answers = await tab.poll()
        for answer in answers:
            _check(answer, "a poll")
            poll_s.append(answer.seconds)
        if any(a.find(key=key) for a in answers):
            return
        if time.perf_counter() > deadline:
            raise SessionError(f"no {key!r} on the page in time")
        await asyncio.sleep(max(0.0, interval - sum(a.seconds for a in answers)))


async def _ws_session(i: int, url: str, *, backbone, dataset, steps, timeout_s, cookies) -> dict:
    """One tab, as a person uses the Train page: fill the form and Start, watch the run's card until it
    offers Explore, then reload the page twice (the link with ?runs=, a new connection each time, as a
    reload is; the answer must hold the card)."""
    from .st_client import SessionError, StreamlitSession

    out: dict = {"session": i, "page_s": [], "poll_s": [], "error": None, "run_id": None}
    try:
        t0 = time.perf_counter()
        async with StreamlitSession(url, cookies=cookies) as tab:
            run_id, first_load_s = await _start_from_the_form(tab, backbone=backbone, dataset=dataset, steps=steps)
            out.update(run_id=run_id, start_s=time.perf_counter() - t0)
            out["page_s"].append(first_load_s)
            await _poll_until(tab, f"explore-{run_id}", t0 + timeout_s, out["poll_s"])
            out["watched_s"] = time.perf_counter() - t0
        for _ in range(2):
            async with StreamlitSession(url, query=f"runs={run_id}", cookies=cookies) as tab:
                page = await tab.load()
                _check(page, "a reload")
                if page.find(key=f"explore-{run_id}") is None:
                    raise SessionError(f"a reload does not show run {run_id}'s card")
                out["page_s"].append(page.seconds)
    except SessionError as exc:  # one session's failure is a finding, not the end of the test
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


async def _load_test(sessions, *, clients, workshop, backbone, dataset, steps, stagger_s, timeout_s, home, log) -> dict:
    from .store import RunStore

    env = {"EMBEDLAB_WORKSHOP": "1", "EMBEDLAB_INSTRUCTOR_CODE": "load-test"} if workshop else {}
    kw = dict(backbone=backbone, dataset=dataset, steps=steps, timeout_s=timeout_s)

    async def staggered(i, session):
        await asyncio.sleep(i * stagger_s)
        return await session

    with tempfile.TemporaryDirectory() as tmp, serve(home, log, extra_env=env) as server:
        t0 = time.perf_counter()
        if clients == WS_CLIENTS:
            done = await asyncio.gather(*(staggered(i, _ws_session(i, server.url, cookies=_person(i) if workshop else None,
                                                                   **kw)) for i in range(sessions)))
        elif clients == BROWSER_CLIENTS:
            if workshop:
                raise BenchError("the browser clients have no names: run them outside workshop mode")
            async with _async_playwright()() as p:
                browser = await p.chromium.launch(executable_path=_niced_chromium(Path(tmp)), args=CHROMIUM_ARGS)
                try:
                    done = await asyncio.gather(*(staggered(i, _browser_session(i, browser, server.url, **kw))
                                                  for i in range(sessions)))
                finally:
                    await browser.close()
        else:
            raise BenchError(f"clients must be {WS_CLIENTS!r} or {BROWSER_CLIENTS!r}, not {clients!r}")
        wall = time.perf_counter() - t0
        runs = RunStore(server.home).list()
    statuses = {r.id: r.status for r in runs}
    owners = {r.id: getattr(r, "owner_id", None) for r in runs}
    started = [d["run_id"] for d in done if d["run_id"]]
    page_s = [s for d in done for s in d["page_s"]]
    poll_s = [s for d in done for s in d["poll_s"]]
    start_s = [d["start_s"] for d in done if "start_s" in d]
    return {
        "sessions": sessions, "clients": clients, "workshop": workshop,
        "runs_recorded": len(runs), "runs_started": len(started), "runs_finished": sum(s == "finished" for s in statuses.values()),
        "lost": sorted(set(started) - set(statuses)), "duplicates": len(started) - len(set(started)),
        "not_finished": {r: statuses[r] for r in started if statuses.get(r) != "finished"},
        "owners": len({owners[r] for r in started if r in owners}),
        "errors": [d["error"] for d in done if d["error"]],
        "pages_answered": len(page_s), "pages_expected": (3 if clients == WS_CLIENTS else 2) * sessions,
        "p95_page_s": _p95(page_s), "median_page_s": statistics.median(page_s) if page_s else None,
        "polls_answered": len(poll_s), "p95_poll_s": _p95(poll_s), "max_poll_s": max(poll_s, default=None),
        "p95_start_s": _p95(start_s), "wall_s": wall, "load_average": os.getloadavg(),
        "backbone": backbone, "dataset": dataset, "steps": steps,
    }


def load_test(sessions: int = 20, *, clients: str = WS_CLIENTS, workshop: bool | None = None,
              backbone: str = "test_vit", dataset: str = "digits", steps: int | None = 20, stagger_s: float = 1.0,
              timeout_s: float = 900.0, home: Path | None = None, log: Path | None = None) -> dict:
    """`sessions` sessions on one server, each starting a tiny CE run and watching it finish.

    clients: "websocket" (default: core/st_client.py tabs, each a person of a workshop with their own
    name cookie, so the queue is the fair one across 20 people) or "browser" (headless Chromium
    contexts, single-user mode). workshop: default on for websocket clients.

    Returns counts (runs recorded / started / finished, lost, duplicates, owners, errors), pages answered of
    expected with their p95 and median time (websocket: the first load and two reloads per session, each
    until the run's card is in the answer; browser: the two reloads), the polls answered and their p95,
    and the p95 time from opening the page to the started batch.
    """
    workshop = clients == WS_CLIENTS if workshop is None else workshop
    if home is None:
        with tempfile.TemporaryDirectory(prefix="embedlab-load-") as tmp:
            return load_test(sessions, clients=clients, workshop=workshop, backbone=backbone, dataset=dataset,
                             steps=steps, stagger_s=stagger_s, timeout_s=timeout_s, home=Path(tmp) / "home",
                             log=log or Path(tmp) / "server.log")
    Path(home).mkdir(parents=True, exist_ok=True)
    return run_async(_load_test(sessions, clients=clients, workshop=workshop, backbone=backbone, dataset=dataset,
                                  steps=steps, stagger_s=stagger_s, timeout_s=timeout_s, home=Path(home),
                                  log=Path(log or Path(home) / "server.log")))


def format_viewers(result: dict) -> str:
    """The BENCHMARKS.md table: viewers, steps/s, ratio, server and browser CPU, load."""
    lines = ["| browsers on Train | steps/s | ratio to 0 | server CPU (cores) | browsers' CPU (nice 19) "
             "| pages that redrew in the window | load avg |", "|---|---|---|---|---|---|---|"]
    for n, row in result["viewers"].items():
        lines.append(f"| {n} | {row['steps_per_s']:.1f} | **{row['ratio']:.2f}** | {row['server_cpu']:.2f} | "
                     f"{row['browser_cpu']:.2f} | {row['pages_updated']:.0f} of {n} | {row['load']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.viewer_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small form: viewers 0 and 1, short windows, 3 sessions")
    parser.add_argument("--only", choices=("viewers", "load"), help="run one of the two")
    parser.add_argument("--clients", choices=(WS_CLIENTS, BROWSER_CLIENTS), default=WS_CLIENTS,
                        help="the load test's sessions: websocket tabs (a workshop of named people) or headless Chromium")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    out = {}
    if args.only in (None, "viewers"):
        out["viewers"] = viewer_benchmark((0, 1), window_s=6, settle_s=2, steps=12_000) if args.quick else viewer_benchmark()
    if args.only in (None, "load"):
        out["load"] = load_test(3 if args.quick else 20, clients=args.clients)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        if "viewers" in out:
            print(format_viewers(out["viewers"]))
        if "load" in out:
            print({k: v for k, v in out["load"].items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
