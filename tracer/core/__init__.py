"""The batched patched forward: corruption, taps, the packed forward, the schedule, the trace."""
