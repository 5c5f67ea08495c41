"""A small Streamlit page for tests/test_st_client.py: one widget of each kind the load test sets, a
button, a cookie read back, query parameters, a fragment on a timer and an exception on request."""
import streamlit as st

n = st.number_input("n", value=1, key="n")
pick = st.selectbox("pick", ["a", "b"], key="pick")
many = st.multiselect("many", ["x", "y", "z"], default=["x"], key="many")
st.markdown(f"values n={n} pick={pick} many={','.join(many)}")
st.markdown(f"cookie who={st.context.cookies.get('who', '-')}")
st.markdown(f"query q={st.query_params.get('q', '-')}")
if st.button("Go", key="go"):
    st.session_state["clicks"] = st.session_state.get("clicks", 0) + 1
    st.query_params["clicked"] = str(n)
st.markdown(f"clicks={st.session_state.get('clicks', 0)}")
st.button("Never", key="never", disabled=True)
st.button("Keyless")


@st.fragment(run_every=0.5)
def ticker():
    st.session_state["ticks"] = st.session_state.get("ticks", 0) + 1
    st.progress(0.5, text=f"ticks={st.session_state['ticks']}")


ticker()
if st.checkbox("fail", key="fail"):
    raise ValueError("failed on purpose")
