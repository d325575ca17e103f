"""Imports every built-in policy module so that `@register` has run for each."""

from . import amin, mcsf, sarathi, vllm  # noqa: F401
