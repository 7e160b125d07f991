"""``autoid repair``: undo what the legacy job left in AutoID (docs/repair.md)."""
