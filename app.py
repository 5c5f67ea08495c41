"""EmbedLab: the Streamlit entry point (router)."""
import streamlit as st

st.set_page_config(page_title="EmbedLab", layout="wide")
st.title("EmbedLab")
st.write("See what fine-tuning does to a vision model's embeddings. The full app is being built; use `python -m core train` meanwhile.")
