"""Sphinx configuration: Markdown pages (MyST), the command reference from the click commands
themselves (sphinx-click) and the library reference from its docstrings (autodoc)."""

project = "skelctl"
extensions = ["myst_parser", "sphinx_click", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 4            # GitHub-style anchors, so `page.md#heading` links resolve
exclude_patterns = ["_build"]
autodoc_typehints = "description"
autodoc_member_order = "bysource"
html_theme = "alabaster"
html_title = "skelctl"
