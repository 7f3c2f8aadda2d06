"""Training plumbing behind ``python -m robust.train``: method plug-ins and a resumable sampler."""

from robust.training.methods import Method, get_method, list_methods, register_method

__all__ = ["Method", "get_method", "list_methods", "register_method"]
