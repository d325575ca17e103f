"""Imports every built-in policy module so that `@register` has run for each."""

from . import plan_replay, sarathi, vllm  # noqa: F401
