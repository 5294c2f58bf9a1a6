"""Adapters for agent frameworks, one module each, each behind its own extra (``amem[langgraph]``, ...)."""
