"""Compare page (placeholder until the Explore/Compare work lands)."""
import streamlit as st

st.header("Compare")
st.info("Coming soon.")
