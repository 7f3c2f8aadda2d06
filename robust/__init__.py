"""robust: robustness and test-time adaptation toolkit (foundation: tasks, Taskonomy I/O, synthetic data, runs)."""

from robust.tasks import get_domain, list_domains, register_domain

__version__ = "0.1.0"
__all__ = ["__version__", "get_domain", "list_domains", "register_domain"]
