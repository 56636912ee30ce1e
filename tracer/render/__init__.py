"""Results as text, tables, terminal plots, exported files and figures."""
