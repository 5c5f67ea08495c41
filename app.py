"""EmbedLab: the Streamlit entry point, a router around the pages in pages/.

    $ streamlit run app.py        (or `make run`)

Every page is a thin script; the state lives in core (the run store and one JobManager per server
process), so reloads, second tabs and other browsers all see the same runs.
"""
import streamlit as st

from core.device import describe, hub_reachable
from core.safe_text import md_code, md_text
from core.preload import preload
from core.projections import warm_up_at_start
from core.workshop import workshop_enabled
from pages import _identity
from pages._ui import PAGES, get_manager, get_store, home_dir, routed

preload()  # before any page, worker or warm-up thread imports pandas, pyarrow or sklearn lazily (core/preload.py)
st.set_page_config(page_title="EmbedLab", page_icon=":material/scatter_plot:", layout="wide")



@st.cache_data(show_spinner=False)
def _device() -> str:
    return describe()


pages = [
    st.Page(PAGES["train"], title="Train", icon=":material/model_training:", default=True),
    st.Page(PAGES["explore"], title="Explore", icon=":material/scatter_plot:"),
    st.Page(PAGES["compare"], title="Compare", icon=":material/compare_arrows:"),
    st.Page(PAGES["runs"], title="Runs", icon=":material/table_rows:"),
    st.Page(PAGES["learn"], title="Learn", icon=":material/school:"),
]
identity = _identity.identity()  # LOCAL outside workshop mode; None until a workshop visitor gives a name
if workshop_enabled() and identity is not None and identity.instructor:  # the class board: the instructor's
    pages.append(st.Page(PAGES["board"], title="Class board", icon=":material/groups:"))
page = st.navigation(pages)

store = get_store()  # opening the store once per process marks runs of a dead server as interrupted
if store.recovery_notice:  # a corrupt runs.db was moved aside and the run list rebuilt: say so, on every page
    st.warning(md_text(store.recovery_notice), icon=":material/warning:")
if store.read_only:
    st.warning(f"EMBEDLAB_HOME {md_code(store.root)} is read-only: runs are listed, but nothing can be trained, saved or "
               "changed here.", icon=":material/lock:")
get_manager()  # one JobManager per server process, shared by every session
warm_up_at_start()  # once per process: numba's UMAP / t-SNE kernels loaded (or compiled) before a click

with st.sidebar:
    st.markdown("### :material/scatter_plot: EmbedLab")
    st.caption("See what fine-tuning does to a vision model's embeddings.")
    online = hub_reachable()
    st.markdown(f":material/memory: **Device** · {md_text(_device())}")
    if online:
        st.markdown(":material/cloud_done: **Pretrained weights** · :green[online] (Hugging Face hub reachable)")
    else:
        st.markdown(":material/cloud_off: **Pretrained weights** · :orange[offline]: bundled models only")
    st.caption(f"EMBEDLAB_HOME: {md_code(home_dir())}")
    if workshop_enabled():
        st.divider()
        _identity.sidebar_panel()

if identity is None:  # workshop mode: a name once, before any page (kept in this browser's cookies)
    _identity.ask_name()
    st.stop()

with routed():
    page.run()
