"""Mail after a run or audit: when to send, composing from summary.json, sending."""
