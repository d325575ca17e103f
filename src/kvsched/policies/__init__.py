"""Scheduling policies: the contract, the registry and the built-in policies."""

from .base import Policy, PolicyTags
from .registry import make, parameters, parse_policy_spec, register, registered, resolve

__all__ = ["Policy", "PolicyTags", "make", "parameters", "parse_policy_spec", "register",
           "registered", "resolve"]
