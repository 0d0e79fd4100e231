"""Sphinx configuration for the ccs-gateway manual (built on Read the Docs, and by the tests
with warnings as errors)."""

project = "ccs-gateway"
author = "ccs-gateway authors"
copyright = "ccs-gateway authors"
release = "0.1.0"

extensions: list[str] = []
root_doc = "index"
exclude_patterns = ["_build"]
highlight_language = "none"
html_theme = "alabaster"
html_static_path: list[str] = []
