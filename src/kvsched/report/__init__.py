"""Reports from stored sweep results: figures (matplotlib), tables, a self-contained HTML page.

This is the only package that plots.
"""

from .html import write_report

__all__ = ["write_report"]
