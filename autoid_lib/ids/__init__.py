"""Participant IDs from patterns: syntax, tree, space (size and unranking), generation."""
