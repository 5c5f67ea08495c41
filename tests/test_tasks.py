"""core/tasks.py: background work the JobManager owns (the Train page's selections)."""
import threading

import pytest

from core.errors import EmbedLabError, InvalidConfig
from core.tasks import TaskRunner


def test_a_task_runs_in_the_background_and_reports_progress_and_result():
    gate = threading.Event()
    runner = TaskRunner()

    def work(progress):
        progress("embedding the pool")
        gate.wait(10)
        return {"id": "sel-1"}

    task = runner.submit("selection", "VeCAF, 20", work)
    assert task.active and task.thread is not threading.current_thread()  # submit returned before the work ended
    for _ in range(200):
        if task.progress:
            break
        threading.Event().wait(0.01)
    assert task.status == "running" and task.progress == "embedding the pool"
    gate.set()
    task.thread.join(10)
    assert task.status == "finished" and task.result == {"id": "sel-1"} and task.error is None
    assert runner.get(task.id) is task and runner.list("selection") == [task] and task.elapsed() >= 0


def test_errors_come_back_as_one_line_and_crashes_are_not_lost():
    runner = TaskRunner()

    def bad(progress):
        raise InvalidConfig("budget 900 is larger than the pool of 100 training images")

    def crash(progress):
        raise ZeroDivisionError("division by zero")

    a, b = runner.submit("selection", "a", bad), runner.submit("selection", "b", crash)
    a.thread.join(10)
    b.thread.join(10)
    assert a.status == "failed" and a.error == "budget 900 is larger than the pool of 100 training images"
    assert b.status == "failed" and b.error == "selection failed: ZeroDivisionError: division by zero"


def test_one_task_computes_at_a_time_the_next_waits_queued():
    runner = TaskRunner(max_running=1)
    gate = threading.Event()
    first = runner.submit("selection", "first", lambda progress: gate.wait(10))
    second = runner.submit("selection", "second", lambda progress: "done")
    threading.Event().wait(0.2)
    assert first.status == "running" and second.status == "queued"
    gate.set()
    second.thread.join(10)
    assert first.status == second.status == "finished" and second.result == "done"


def test_old_finished_tasks_are_forgotten_and_shutdown_refuses_new_ones():
    runner = TaskRunner(keep=2)
    tasks = []
    for i in range(4):
        tasks.append(runner.submit("selection", str(i), lambda progress, i=i: i))
        tasks[-1].thread.join(10)
    # forgetting happens at submit: the 4th found 0, 1, 2 finished and kept the newest two of them
    assert [t.result for t in runner.list()] == [1, 2, 3]
    runner.shutdown()
    with pytest.raises(EmbedLabError, match="shutting down"):
        runner.submit("selection", "late", lambda progress: None)


def test_the_job_manager_owns_a_task_runner(tmp_path):
    from core.jobs import JobManager
    from core.store import RunStore

    manager = JobManager(RunStore(tmp_path), train_fn=lambda *a, **k: {}, validate_fn=lambda cfg, root: cfg)
    task = manager.tasks.submit("selection", "x", lambda progress: 42)
    task.thread.join(10)
    assert task.result == 42
    manager.shutdown()
    with pytest.raises(EmbedLabError):
        manager.tasks.submit("selection", "after shutdown", lambda progress: None)


def test_the_train_pages_selection_runs_on_the_app_managers_task_runner(home):
    """pages/_seeds_ui.selection_maker: the click returns at once, the selection is a task of the one JobManager
    every session shares, and its error reaches the page as one line."""
    from streamlit.testing.v1 import AppTest

    def page(root):
        import streamlit as st

        from pages import _seeds_ui

        _seeds_ui.selection_maker(st, root, "test_vit", "no-such-dataset", key="mk")

    at = AppTest.from_function(page, args=(str(home),), default_timeout=120).run()
    at.button(key="mk_go").click().run()
    assert not at.exception, at.exception
    job = at.session_state["mk_job"]
    from pages._ui import get_manager

    assert job["task"] in get_manager().tasks.list("selection")
    job["thread"].join(60)
    at.run()
    assert job["task"].status == "failed" and "no-such-dataset" in job["task"].error
    assert any("no-such-dataset" in e.value for e in at.error)
    assert not at.button(key="mk_go").disabled  # Select is enabled again after a failure
