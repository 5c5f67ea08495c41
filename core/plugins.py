"""The one list of plugin modules: importing this fills the registries (core/registry.py).

    BACKBONES  (core.backbones)   test_vit, test_clip; efficientnet_lite0, lite0-minilm (core.lite0_minilm)
    OBJECTIVES (core.objectives)  ce, lacvit, flyp; content-style (core.content_style)

A registry module imports none of its plugins (as timm's `_registry.py` never imports a model file);
code that needs every entry imports this module (or calls `backbones.registered()` /
`objectives.registered()`, which do). A new backbone or objective module adds one line here.
"""
from __future__ import annotations

from . import backbones, objectives  # noqa: F401  the registries and their built-in entries
from . import content_style  # noqa: F401  objective "content-style" (seed 001)
from . import lite0_minilm  # noqa: F401  backbones "efficientnet_lite0", "lite0-minilm"
