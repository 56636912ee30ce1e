"""Models in: the loader, GGUF files, dequantization, and where each architecture keeps its parts."""
