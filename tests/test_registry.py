"""core/registry.py: a named registry that imports no plugin; core/plugins.py fills the real ones."""
from __future__ import annotations

import subprocess
import sys

import pytest

from core.errors import UnknownName
from core.registry import Registry


def test_register_decorator_lookup_and_did_you_mean():
    reg: Registry[tuple] = Registry("widget")

    @reg.register("spanner", lambda fn: (fn, "spanner entry"))
    def spanner():
        return 1

    assert spanner() == 1 and list(reg) == ["spanner"] and reg["spanner"][1] == "spanner entry"
    with pytest.raises(ValueError, match="already registered"):
        reg.add("spanner", (None, ""))
    with pytest.raises(UnknownName, match=r"unknown widget 'spaner'; choose from: spanner; did you mean spanner\?"):
        reg.get_entry("spaner")
    reg.remove("spanner")
    assert "spanner" not in reg and len(reg) == 0


@pytest.mark.slow  # over ~3 s of CPU (idle, 2026-12-02)
def test_registry_modules_import_no_plugin():
    """Importing a registry module registers only its own entries; the plugin list adds the rest."""
    code = ("import sys, core.objectives as o, core.backbones as b; "
            "print(sorted(o.OBJECTIVES), sorted(b.BACKBONES), 'core.content_style' in sys.modules, "
            "'core.lite0_minilm' in sys.modules); import core.plugins; print(sorted(o.OBJECTIVES), sorted(b.BACKBONES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "['ce', 'flyp', 'lacvit'] ['test_clip', 'test_vit'] False False"
    assert out[1] == "['ce', 'content-style', 'flyp', 'lacvit'] ['efficientnet_lite0', 'lite0-minilm', 'test_clip', 'test_vit']"


def test_labels_colours_and_trained_space_come_from_the_entries():
    from core.objectives import objective_colour, objective_label, objective_labels, trained_space

    assert objective_labels() == {"ce": "CE", "lacvit": "LaCViT", "flyp": "FLYP", "content-style": "Content-style"}
    assert [trained_space(n) for n in ("ce", "lacvit", "flyp", "content-style")] == ["encoder", "projection", "image", "content"]
    assert objective_colour("lacvit") == "#F58518" and objective_colour("gone") is None and objective_label("gone") == "gone"


def test_no_objective_name_branch_in_the_loop():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "core" / "train.py").read_text()
    assert not any(f"objective {op}" in text for op in ("==", "!=", "in (", "in [", "not in ("))
