"""Workshop mode in real Chromium: two named people and the instructor on one server.

Each person is a browser context of their own (own cookies, as separate laptops would be). The second
person cannot cancel the first's run (no button, and taking the first person's name or forging the
instructor cookie changes nothing); the instructor can, after a confirmation; a reload keeps your runs
and your form.
"""
import re

import pytest
from e2e_server import ARTIFACTS, serve_app
from test_train_flow import _pick, _set_number  # the same form helpers as the train flow

pytestmark = pytest.mark.e2e
PlaywrightError = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").Error

CODE = "owl-42"
STEPS = 30000  # long enough that the run is still training while the others look at it


@pytest.fixture(scope="module")
def workshop_url(tmp_path_factory):
    ARTIFACTS.mkdir(exist_ok=True)
    with serve_app(tmp_path_factory.mktemp("workshop-home"), ARTIFACTS / "streamlit-workshop.log",
                   env={"EMBEDLAB_WORKSHOP": "1", "EMBEDLAB_INSTRUCTOR_CODE": CODE}) as url:
        yield url


@pytest.fixture
def people(browser, request):
    """new_person(name) -> a page in its own browser context (own cookies), already joined as `name`."""
    contexts = []

    def new_person(name: str | None):
        context = browser.new_context(viewport={"width": 1440, "height": 1600})
        contexts.append(context)
        pg = context.new_page()
        pg.set_default_timeout(30_000)
        pg.goto(request.getfixturevalue("workshop_url"), timeout=120_000)
        if name is not None:
            _join(pg, name)
        return pg

    yield new_person
    report = getattr(request.node, "report_call", None)
    for i, context in enumerate(contexts):
        if report is not None and report.failed and context.pages:
            context.pages[0].screenshot(path=str(ARTIFACTS / f"FAILED-workshop-{i}.png"), full_page=True)
        context.close()


def _join(pg, name: str) -> None:
    field = pg.locator(".st-key-identity_name input")
    field.wait_for(timeout=90_000)  # the first page load imports torch
    field.fill(name)
    pg.get_by_role("button", name="Join").click()
    pg.locator(".st-key-start").wait_for(timeout=60_000)


def _value(pg, key: str) -> str:
    """A number input's shown value once the rerun in flight has filled it in."""
    field = pg.locator(f".st-key-{key} input")
    for _ in range(20):
        if field.count() == 1 and field.input_value():
            return field.input_value()
        pg.wait_for_timeout(500)
    return field.first.input_value()


def _card_ids(pg) -> list[str]:
    return pg.evaluate("""() => [...document.querySelectorAll('[class*="st-key-card-"]')]
        .map(e => [...e.classList].find(c => c.startsWith('st-key-card-')).slice('st-key-card-'.length))""")


def _click(pg, selector: str, timeout_s: float = 20) -> None:
    """Click a button inside the live panel, which redraws every second (retry a detached element)."""
    for _ in range(int(timeout_s * 2)):
        try:
            pg.locator(selector).first.click(timeout=2_000)
            return
        except PlaywrightError:
            pg.wait_for_timeout(500)
    raise AssertionError(f"could not click {selector}")


def test_two_people_and_the_instructor(people):
    ada = people("Ada")
    assert "Ada" in ada.locator("[data-testid=stSidebar]").inner_text()
    assert "Ada" not in ada.url and "embedlab" not in ada.url  # identity is never in the URL
    _pick(ada, "backbone", "test_vit")
    _pick(ada, "dataset", "mnist5k")
    ada.get_by_role("button", name="Remove FLYP").click()
    ada.get_by_role("button", name="Remove LaCViT").click()
    _set_number(ada, "steps", STEPS)
    _set_number(ada, "n_per_class", 10)
    _set_number(ada, "batch_size", 16)
    start = ada.get_by_role("button", name="Start 1 run")
    start.wait_for()
    ada.wait_for_timeout(300)
    start.click()
    ada.get_by_text("Queued 1 run").first.wait_for(timeout=30_000)  # said under Start, where the click was
    ada.locator('[class*="st-key-cancel-"]').first.wait_for(timeout=60_000)
    (run_id,) = _card_ids(ada)
    ada.screenshot(path=str(ARTIFACTS / "workshop-01-ada.png"))

    # a reload keeps Ada (cookies), her run with its card and her form
    ada.reload(timeout=120_000)
    ada.locator(f".st-key-card-{run_id}").wait_for(timeout=60_000)
    assert ada.locator(".st-key-identity_name").count() == 0  # not asked for a name again
    assert _value(ada, "steps") == str(STEPS) and _value(ada, "batch_size") == "16"
    assert ada.locator(f".st-key-cancel-{run_id}").count() == 1
    assert ada.get_by_text("Also on this server").count() == 0  # hers, not someone else's

    # a second person, who even takes Ada's name, sees the run but has no way to cancel it
    bob = people("Ada")
    bob.locator(f".st-key-card-{run_id}").wait_for(timeout=60_000)
    bob.get_by_text("Also on this server").first.wait_for()
    bob.wait_for_timeout(1_500)  # a poll or two of the live panel
    assert bob.locator(f".st-key-cancel-{run_id}").count() == 0
    assert bob.locator(f".st-key-confirm-cancel-{run_id}").count() == 0
    # a forged instructor cookie is no passcode
    bob.context.add_cookies([{"name": "embedlab_instructor", "value": "f" * 64, "url": bob.url}])
    bob.reload(timeout=120_000)
    bob.locator(f".st-key-card-{run_id}").wait_for(timeout=60_000)
    bob.wait_for_timeout(1_500)
    assert bob.locator(f".st-key-cancel-{run_id}").count() == 0
    assert bob.get_by_role("link", name="Class board").count() == 0
    bob.screenshot(path=str(ARTIFACTS / "workshop-02-second-person.png"))

    # the instructor: a wrong passcode is refused, the right one unlocks cancel (with a confirmation)
    teacher = people("Teacher")
    sidebar = teacher.locator("[data-testid=stSidebar]")
    sidebar.get_by_text("Instructor", exact=True).click()
    teacher.locator(".st-key-instructor_code input").fill("wrong")
    teacher.locator(".st-key-instructor_unlock button").click()
    teacher.get_by_text("not this server's passcode").wait_for()
    if not teacher.locator(".st-key-instructor_code input").is_visible():
        sidebar.get_by_text("Instructor", exact=True).click()
    teacher.locator(".st-key-instructor_code input").fill(CODE)
    teacher.locator(".st-key-instructor_unlock button").click()
    teacher.get_by_role("link", name="Class board").wait_for(timeout=30_000)
    _click(teacher, f".st-key-cancel-{run_id} button")
    teacher.locator(f".st-key-confirm-cancel-{run_id}").wait_for(timeout=20_000)
    assert teacher.locator(f".st-key-card-{run_id}").inner_text().count("Yes, cancel") == 1
    teacher.screenshot(path=str(ARTIFACTS / "workshop-03-instructor-confirms.png"))
    _click(teacher, f".st-key-confirm-cancel-{run_id} button")
    ada.get_by_text(re.compile("cancelled by Teacher")).first.wait_for(timeout=60_000)  # Ada sees who did it
    ada.screenshot(path=str(ARTIFACTS / "workshop-04-ada-sees-who.png"))

    # the instructor stays the instructor across a reload (a derived token in a cookie, not the passcode)
    cookies = {c["name"]: c["value"] for c in teacher.context.cookies()}
    assert cookies.get("embedlab_instructor") and CODE not in cookies["embedlab_instructor"]
    teacher.reload(timeout=120_000)
    teacher.get_by_role("link", name="Class board").wait_for(timeout=60_000)
    teacher.get_by_role("link", name="Class board").click()
    teacher.get_by_text("Pin for the room").first.wait_for(timeout=30_000)
    teacher.screenshot(path=str(ARTIFACTS / "workshop-05-board.png"), full_page=True)
