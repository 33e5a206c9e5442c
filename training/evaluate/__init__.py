"""``earshot evaluate``: the event-level benchmark (streams with known onsets, the real agent pipeline,
recall / false alerts per hour / latency per alert label, per cross-source split)."""
