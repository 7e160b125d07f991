"""The full-history audit: pure checks over a snapshot, and the recorded audit job."""
