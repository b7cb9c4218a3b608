"""Harnesses the tests share: servers in subprocesses, tiny models."""
