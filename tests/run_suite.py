"""`make test`: the whole suite as two pytest processes side by side, so the suite fits in 10 minutes on 2 cores.

    python tests/run_suite.py [pytest args...]

The browser tests (marker e2e: tests/e2e/ and core/viewer_bench's small form) spend most of their time
waiting on the server and Chromium they drive, one at a time; the rest (unit, app, reliability) are
mostly CPU in one process. Run one after the other they leave a core idle much of the time; side by
side they overlap. Each half is a plain pytest run (its own session, temp dirs and EMBEDLAB_HOME), so
a test behaves as it does alone; the browser tests still run one after another, never two servers'
Chromiums at once. The other half streams to the terminal; the browser half's output is kept in
test-artifacts/browser-tests.log and printed when both are done. The exit status is pytest's: 0 only
when both halves pass (a half that selects no test, pytest's 5, counts as passed unless both do).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG = ROOT / "test-artifacts" / "browser-tests.log"
NO_TESTS = 5  # pytest.ExitCode.NO_TESTS_COLLECTED
# The CPU half yields to the browser half: a browser test waits on its server's training against a clock,
# a unit test does not; the CPU half soaks up what the browser half leaves idle.
CPU_HALF_NICE = int(os.environ.get("SUITE_CPU_NICE", "5"))


def combined_status(codes: list[int]) -> int:
    """One exit status for the halves: the first failure's, 0 if every half passed or merely selected nothing."""
    if all(c == NO_TESTS for c in codes):
        return NO_TESTS
    failed = [c for c in codes if c not in (0, NO_TESTS)]
    return failed[0] if failed else 0


def _workers() -> list[str]:
    """pytest-xdist's options for the CPU half: SUITE_WORKERS processes (default 2), a test file per worker
    at a time (`--dist loadfile`: a module's fixtures and caches stay in one process). 0 or 1: no xdist."""
    n = int(os.environ.get("SUITE_WORKERS", "2"))
    return ["-n", str(n), "--dist", "loadfile"] if n > 1 else []


def main(args: list[str]) -> int:
    LOG.parent.mkdir(exist_ok=True)
    pytest = [sys.executable, "-m", "pytest"]
    t0 = time.perf_counter()
    with open(LOG, "w") as log:
        # the cache plugin off in the browser half: two processes writing .pytest_cache at once gain nothing
        browser = subprocess.Popen([*pytest, "-m", "e2e", "-p", "no:cacheprovider", *args], cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        print(f"run_suite: browser tests in the background (pid {browser.pid}), their output: {LOG}", flush=True)
        try:
            rest = subprocess.call([*pytest, "-m", "not e2e", *_workers(), *args], cwd=ROOT,
                                   preexec_fn=lambda: os.nice(CPU_HALF_NICE))
            print(f"run_suite: waiting for the browser tests ({time.perf_counter() - t0:.0f} s so far)", flush=True)
            browser_rc = browser.wait()
        except KeyboardInterrupt:
            browser.terminate()
            raise
    print(f"\n{'=' * 30} browser tests (-m e2e) {'=' * 30}", flush=True)
    print(LOG.read_text(errors="replace"), end="", flush=True)
    status = combined_status([rest, browser_rc])
    print(f"run_suite: not e2e -> exit {rest}, e2e -> exit {browser_rc}; "
          f"the whole suite in {time.perf_counter() - t0:.0f} s -> exit {status}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
