"""EmbedLab core: backbones, datasets, objectives, training, run store, jobs and analysis.

Never imports streamlit, `pages/` or `assets/`: the pages lay out widgets and call into this package,
and the command line (`python -m core`, the package core/cli/ on top, which no library module imports)
drives the same functions. The benchmark (core/bench/) sits beside the library, imported only by the
command line. tests/test_architecture.py keeps these layers pointing one way.
"""
__version__ = "0.1.0"
