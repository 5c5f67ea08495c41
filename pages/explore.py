"""Explore page (placeholder until the Explore/Compare work lands)."""
import streamlit as st

st.header("Explore")
st.info("Coming soon.")
