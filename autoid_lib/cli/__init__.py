"""The ``autoid`` command line; nothing below it imports this package."""
