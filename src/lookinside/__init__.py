"""lookinside: look inside a large language model while you talk to it."""

__version__ = "0.1.0"
