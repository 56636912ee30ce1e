"""The batched patched forward and what schedules it: preparing a run, cells, patching, estimates."""
