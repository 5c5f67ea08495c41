"""tests/run_suite.py (`make test`): the two halves' exit statuses make one."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("run_suite", Path(__file__).with_name("run_suite.py"))
run_suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_suite)


def test_both_halves_must_pass():
    assert run_suite.combined_status([0, 0]) == 0
    assert run_suite.combined_status([1, 0]) == 1 and run_suite.combined_status([0, 1]) == 1
    assert run_suite.combined_status([0, 2]) == 2  # interrupted / usage error in one half fails the suite


def test_a_half_that_selects_nothing_is_not_a_failure_unless_both_do():
    assert run_suite.combined_status([0, run_suite.NO_TESTS]) == 0  # e.g. `make test PYTEST_ARGS=tests/test_tsne.py`
    assert run_suite.combined_status([run_suite.NO_TESTS, 1]) == 1
    assert run_suite.combined_status([run_suite.NO_TESTS, run_suite.NO_TESTS]) == run_suite.NO_TESTS
