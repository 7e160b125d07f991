"""The explore notebook: pure answers over a snapshot, and its ipywidgets layer."""
