"""Prompt policy, the invisible and visible watermarks, content credentials (C2PA) and their check."""
