"""Searches over discrete inputs (token ids, bytes) of models with an embedding lookup."""
