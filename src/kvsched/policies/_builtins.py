"""Imports every built-in policy module so that `@register` has run for each."""

from . import amin, mcsf, plan_replay, sarathi, separate, vllm, wait  # noqa: F401
from . import past_future, repredict, sorted_f, svf, trail  # noqa: F401
