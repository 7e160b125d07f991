"""The run folder: recorded notebook runs, the HTML report, the index, retention."""
