"""Fake services for tests: an OpenAI-compatible replay server (replay_server.py)."""
