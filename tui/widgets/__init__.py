"""The app's widgets; each carries its own DEFAULT_CSS."""
