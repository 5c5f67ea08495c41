"""Workshop mode's core: who is who, the instructor's passcode, who may manage a run, the room's pin."""
import json
import os
import re
import stat

import pytest

from core import workshop
from core.errors import InvalidConfig, NotAllowed
from core.store import RunStore
from core.workshop import (LOCAL, Identity, can_manage, check_passcode, instructor_passcode, new_owner_id,
                           normalise_name, pin_run, pinned_run, valid_owner_id, workshop_enabled)

ALICE = Identity(new_owner_id(), "Alice")
BOB = Identity(new_owner_id(), "Bob")
INES = Identity(new_owner_id(), "Ines", instructor=True)


@pytest.fixture
def room(monkeypatch):
    monkeypatch.setenv(workshop.WORKSHOP_ENV, "1")
    monkeypatch.delenv(workshop.CODE_ENV, raising=False)


@pytest.mark.parametrize("value, on", [("1", True), ("true", True), ("TRUE", True), (" 1 ", True),
                                       ("0", False), ("", False), ("no", False), (None, False)])
def test_workshop_enabled_reads_the_env(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(workshop.WORKSHOP_ENV, raising=False)
    else:
        monkeypatch.setenv(workshop.WORKSHOP_ENV, value)
    assert workshop_enabled() is on


def test_owner_ids_are_random_tokens_and_cookies_are_checked():
    a, b = new_owner_id(), new_owner_id()
    assert a != b and valid_owner_id(a) and valid_owner_id(b)
    for bad in ("", "local", "../../etc", "A" * 32, a + "0", None, 42, "<script>"):
        assert not valid_owner_id(bad)
    assert LOCAL == Identity("local", "you", instructor=True)


def test_names_are_trimmed_capped_and_inert_plain_text():
    assert normalise_name("  Ada   Lovelace \t") == "Ada Lovelace"
    assert normalise_name("Zoë 李") == "Zoë 李"
    hostile = "<img src=x onerror=alert(1)>**b**"
    assert normalise_name(hostile) == hostile  # stored as typed: escaped where it is shown, not mangled here
    assert normalise_name("x" * workshop.NAME_MAX) == "x" * workshop.NAME_MAX
    with pytest.raises(InvalidConfig, match=f"at most {workshop.NAME_MAX} characters"):
        normalise_name("x" * (workshop.NAME_MAX + 1))
    for empty in ("", "   ", "\t"):
        with pytest.raises(InvalidConfig, match="give a name"):
            normalise_name(empty)
    for bad, code in (("Al\nice", "U+000A"), ("Al\x00", "U+0000"), ("evil\u202egnp.exe", "U+202E"),
                      ("zero\u200bwidth", "U+200B"), ("bell\x07", "U+0007")):
        with pytest.raises(InvalidConfig, match=re.escape(code)):
            normalise_name(bad)
    with pytest.raises(InvalidConfig, match="must be text"):
        normalise_name(None)


def test_can_manage_outside_workshop_mode_lets_everyone(monkeypatch):
    monkeypatch.delenv(workshop.WORKSHOP_ENV, raising=False)
    assert can_manage(BOB, ALICE.owner_id) and can_manage(None, ALICE.owner_id) and can_manage(BOB, None)


def test_can_manage_in_workshop_mode_owner_or_instructor(room):
    assert can_manage(ALICE, ALICE.owner_id)
    assert not can_manage(BOB, ALICE.owner_id)
    assert can_manage(INES, ALICE.owner_id) and can_manage(INES, None)
    assert not can_manage(BOB, None) and not can_manage(BOB, "local")  # an old run: the instructor's to manage
    assert can_manage(None, ALICE.owner_id)  # None is LOCAL: the server's own console / CLI
    with pytest.raises(NotAllowed, match="run r1 is Alice's run: only its owner or the instructor can cancel it"):
        workshop.check_manage(BOB, ALICE.owner_id, "r1", "cancel", "Alice")


def test_passcode_is_made_once_per_home_kept_private_and_checked(home, room, capsys):
    code = instructor_passcode()
    path = home / workshop.CODE_FILE
    assert path.read_text().strip() == code and len(code) == 9 and code[4] == "-"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # not readable by the room's other accounts
    assert code in capsys.readouterr().err  # printed once to the server's console when it was made
    assert instructor_passcode() == code and instructor_passcode(home) == code  # the same for every session
    assert capsys.readouterr().err == ""
    assert check_passcode(code) and check_passcode(f"  {code}\n")
    assert not check_passcode(code.upper()) and not check_passcode("") and not check_passcode(None)
    assert not check_passcode(code[:-1]) and not check_passcode("ä" + code)  # non-ASCII: no TypeError, just False

    fresh = workshop.new_passcode()  # what `make run WORKSHOP=1` does at each start
    assert fresh != code and check_passcode(fresh) and not check_passcode(code)


def test_passcode_env_override(home, room, monkeypatch):
    monkeypatch.setenv(workshop.CODE_ENV, "letmein")
    assert instructor_passcode() == "letmein" and check_passcode("letmein") and not check_passcode("letmeout")
    assert not (home / workshop.CODE_FILE).exists()


def test_workshop_code_command_prints_a_fresh_code_and_the_host_hint(home, room, capsys):
    old = instructor_passcode()
    capsys.readouterr()
    assert workshop.main(["--new-code", "--host", "127.0.0.1", "--port", "8501"]) == 0
    out = capsys.readouterr().out
    new = (home / workshop.CODE_FILE).read_text().strip()
    assert new != old and f"instructor passcode  {new}" in out and "HOST=0.0.0.0" in out


def test_pin_is_instructor_only_and_shared_through_the_home(home, room):
    store = RunStore(home)
    run_id = store.create_run({"objective": "lacvit"}, owner_id=ALICE.owner_id, owner_name="Alice")
    assert pinned_run() is None
    with pytest.raises(NotAllowed, match="only the instructor"):
        pin_run(run_id, ALICE)
    pin_run(run_id, INES)
    assert pinned_run() == run_id and pinned_run(home) == run_id  # any session, any server on this home
    assert json.loads((home / workshop.PIN_FILE).read_text()) == {"run_id": run_id, "by": "Ines"}
    with pytest.raises(InvalidConfig, match="no run 'nope'"):
        pin_run("nope", INES)
    with pytest.raises(Exception, match="not allowed"):
        pin_run("../etc", INES)
    assert pinned_run() == run_id  # a refused pin changes nothing
    store.delete(run_id)
    assert pinned_run() is None  # a deleted run is pinned no more
    other = store.create_run({"objective": "ce"})
    pin_run(other, INES)
    pin_run(None, INES)
    assert pinned_run() is None
    (home / workshop.PIN_FILE).write_text("{not json")
    assert pinned_run() is None
    (home / workshop.PIN_FILE).write_text(json.dumps({"run_id": "../../x"}))
    assert pinned_run() is None


def test_pin_outside_workshop_mode_is_the_local_users(home, monkeypatch):
    monkeypatch.delenv(workshop.WORKSHOP_ENV, raising=False)
    run_id = RunStore(home).create_run({"objective": "ce"})
    pin_run(run_id, None)  # LOCAL is the instructor of their own machine
    assert pinned_run() == run_id
