"""Imports every built-in policy module so that `@register` has run for each."""

from . import sarathi, vllm  # noqa: F401
from . import separate, wait  # noqa: F401
