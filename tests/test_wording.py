"""Issue 17.7 wording: the app names methods, not research-seed numbers, and names its own controls, not CLI
flags, in the messages it shows (the CLI keeps its flags)."""
import ast
import sys
from pathlib import Path

import pytest

from pages._wording import ui_message

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))


def _ui_strings(path: Path) -> list[str]:
    """String literals of a page module, docstrings left out (they are for readers of the code)."""
    tree = ast.parse(path.read_text())
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


@pytest.mark.parametrize("page", sorted(p.name for p in (REPO / "pages").glob("*.py")))
def test_pages_name_methods_not_seed_numbers(page):
    import re

    hits = [s for s in _ui_strings(REPO / "pages" / page) if re.search(r"\bseed 0\d\d\b", s, re.IGNORECASE)]
    assert not hits, hits


def test_ui_message_names_the_controls():
    from core.errors import InvalidConfig

    text = ui_message(InvalidConfig("set a budget: --steps S or --epochs E"))
    assert text == "set a budget: a number of “Steps” (under Budget)"
    assert ui_message("budget 900 is larger than the pool of 50 training images; lower it or raise --n-per-class") \
        .endswith("lower “Budget (images)” or use a larger dataset")
    assert ui_message("no flags here") == "no flags here"


def test_the_cli_keeps_its_flag(tmp_path):
    from core.errors import InvalidConfig
    from core.train import TrainConfig, validate

    with pytest.raises(InvalidConfig, match="--steps S or --epochs E"):
        validate(TrainConfig(backbone="test_vit", dataset="digits", steps=None, epochs=None), root=tmp_path)
