"""EmbedLab core: backbones, datasets, objectives, training, run store, jobs and analysis.

Never imports streamlit: the pages in `pages/` lay out widgets and call into this package, and the
CLI (`python -m core`) drives the same functions.
"""
__version__ = "0.1.0"
