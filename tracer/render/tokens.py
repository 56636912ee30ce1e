"""How a token or a user's text is shown: whitespace made visible, control characters escaped."""


def _control_picture(code: int) -> str:
    if code < 0x20:
        return chr(0x2400 + code)  # ␀ .. ␟: ESC -> ␛, CR -> ␍, BEL -> ␇
    if code == 0x7F:
        return "␡"
    return f"\\x{code:02x}"  # C1 controls (0x80-0x9f) have no pictures


_CONTROLS = {c: _control_picture(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}


_CONTROLS_BUT_NEWLINE = {c: p for c, p in _CONTROLS.items() if c != 0x0A}


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """`text` safe for a terminal: every control character (C0, DEL, C1) shown as a
    picture (␛, ␍, ␇, ␡) or a \\x escape, never sent raw (a raw CR or ESC rewrites the line);
    `keep_newlines` leaves line breaks of a several-line message alone."""
    return str(text).translate(_CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS)


def show_token(text: str) -> str:
    """A token as a label: whitespace made visible (' Tower' -> '␣Tower', ⏎, ⇥) and every other
    control character escaped (escape_controls); the empty token is '∅'. The one helper for
    token labels in the text export, the CLI and the app (tracer.render.terminal_plot.visible)."""
    return escape_controls(text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")) or "∅"
