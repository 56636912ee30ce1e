"""One chip per prompt token: subject tokens marked, chosen patch positions highlighted.

Mouse: click a chip to toggle it. Keyboard: left/right (home/end) move the cursor,
space or enter toggles. Chips wrap onto more lines when the prompt is long.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracer.render.terminal_plot import visible

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget


class TokenStrip(Widget, can_focus=True):
    DEFAULT_CSS = """
    TokenStrip {
        height: auto;
        max-height: 6;
        padding: 0 1;
        overflow-y: auto;
    }
    TokenStrip:focus { background: $boost; }
    TokenStrip > .token-strip--label { color: $text-muted; }
    TokenStrip > .token-strip--chip { background: $panel; color: $foreground; }
    TokenStrip > .token-strip--subject { background: $panel; color: $accent; text-style: bold; }
    TokenStrip > .token-strip--selected { background: $primary; color: $background; text-style: bold; }
    TokenStrip > .token-strip--cursor { text-style: bold underline; }
    TokenStrip > .token-strip--note { color: $warning; }
    """
    COMPONENT_CLASSES = {
        "token-strip--label", "token-strip--chip", "token-strip--subject",
        "token-strip--selected", "token-strip--cursor", "token-strip--note",
    }
    BINDINGS = [
        Binding("left", "move(-1)", "Previous token", show=False),
        Binding("right", "move(1)", "Next token", show=False),
        Binding("home", "move_to(0)", "First token", show=False),
        Binding("end", "move_to(-1)", "Last token", show=False),
        Binding("space,enter", "toggle_cursor", "Toggle position", tooltip="Restore this token's states in the components view"),
    ]

    @dataclass
    class Toggled(Message):
        """The chosen positions changed."""

        strip: "TokenStrip"
        selected: tuple[int, ...]

    tokens: reactive[tuple[str, ...]] = reactive((), layout=True)
    subject_range: reactive[tuple[int, int] | None] = reactive(None)
    selected: reactive[frozenset[int]] = reactive(frozenset())
    cursor: reactive[int] = reactive(0)
    note: reactive[str] = reactive("", layout=True)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.source: tuple[str, str] | None = None  # the (prompt, subject) these tokens came from
        self.aligned: list[str] | None = None  # the corrupted prompt's tokens under each token

    # ---- data in -----------------------------------------------------------------
    def set_tokens(self, tokens: list[str], subject_range: tuple[int, int] | None, source=None, note: str = "") -> None:
        """Show new tokens. The same tokens keep their selection; new ones preselect the
        subject's last token."""
        tokens = tuple(tokens)
        same = tokens == self.tokens and subject_range == self.subject_range
        self.source = source
        self.note = note
        if not same:
            self.tokens = tokens
            self.subject_range = subject_range
            last = subject_range[1] - 1 if subject_range else None
            self.selected = frozenset() if last is None else frozenset({last})
            self.cursor = last if last is not None else 0
            self.post_message(self.Toggled(self, self.positions))
        self.refresh(layout=True)

    def show_note(self, note: str) -> None:
        self.note = note

    def set_aligned(self, aligned: list[str] | None) -> None:
        """Under each token, the corrupted prompt's token(s) aligned with it ("" where it has no
        counterpart); None: no second line (noise mode)."""
        self.aligned = aligned
        self.refresh(layout=True)

    @property
    def positions(self) -> tuple[int, ...]:
        return tuple(sorted(self.selected))

    def is_current(self, prompt: str, subject: str) -> bool:
        return self.source == (prompt, subject) and bool(self.tokens)

    # ---- actions -----------------------------------------------------------------
    def toggle(self, index: int) -> None:
        if not 0 <= index < len(self.tokens):
            return
        self.selected = self.selected ^ {index}
        self.cursor = index
        self.post_message(self.Toggled(self, self.positions))

    def select_subject_last(self) -> None:
        """Choose only the subject's last token."""
        if self.subject_range:
            self.selected = frozenset({self.subject_range[1] - 1})
            self.post_message(self.Toggled(self, self.positions))

    def on_click(self, event) -> None:
        index = event.style.meta.get("chip") if event.style else None
        if isinstance(index, int):
            self.action_toggle_chip(index)

    def action_toggle_chip(self, index: int) -> None:  # a click on a chip
        self.toggle(int(index))

    def action_toggle_cursor(self) -> None:
        self.toggle(self.cursor)

    def action_move(self, step: int) -> None:
        if self.tokens:
            self.cursor = max(0, min(len(self.tokens) - 1, self.cursor + step))

    def action_move_to(self, index: int) -> None:
        if self.tokens:
            self.cursor = index % len(self.tokens)

    # ---- drawing -----------------------------------------------------------------
    def render(self) -> Text:
        style = self.get_component_rich_style
        text = Text(no_wrap=False, overflow="fold")
        text.append("Tokens ", style("token-strip--label"))
        if not self.tokens:
            text.append(self.note or "(none yet)", style("token-strip--note" if self.note else "token-strip--label"))
            return text
        aligned = self.aligned if self.aligned is not None and len(self.aligned) == len(self.tokens) else None
        if aligned is not None:
            return self._render_aligned(aligned)
        for i, token in enumerate(self.tokens):
            text.append(visible(token), self._chip_style(i))
            text.append(" ")
        if self.note:
            text.append(f" {self.note}", style("token-strip--note"))
        return text

    def _chip_style(self, i: int) -> Style:
        style = self.get_component_rich_style
        b, e = self.subject_range or (-1, -1)
        part = "token-strip--selected" if i in self.selected else "token-strip--subject" if b <= i < e else "token-strip--chip"
        chip_style = style(part)
        if i == self.cursor and self.has_focus:
            chip_style += self.get_component_rich_style("token-strip--cursor", partial=True)  # keeps the chip's colours
        # a plain meta key, not "@click": Textual draws action links underlined in the link colour,
        # which underlined every chip and hid the subject's accent and the selection's colours
        return chip_style + Style(meta={"chip": i})

    def _render_aligned(self, aligned: list[str]) -> Text:
        """Two lines per row of chips: the tokens, and under each the corrupted token(s) it is
        aligned with ("·" where it has none), each chip as wide as the wider of the two."""
        style = self.get_component_rich_style
        room = max(20, self.size.width - 2) if self.size.width else 10_000
        label = "Tokens    "
        rows: list[tuple[Text, Text]] = []
        top, bottom = Text(label, style("token-strip--label")), Text("Corrupted ", style("token-strip--label"))
        for i, token in enumerate(self.tokens):
            clean, other = visible(token), visible(aligned[i]) if aligned[i] else "·"
            width = max(len(clean), len(other))
            if top.cell_len + width + 1 > room and top.cell_len > len(label):
                rows.append((top, bottom))
                top, bottom = Text(" " * len(label)), Text(" " * len(label))
            top.append(clean.ljust(width), self._chip_style(i))
            top.append(" ")
            bottom.append(other.ljust(width), style("token-strip--label" if aligned[i] else "token-strip--note"))
            bottom.append(" ")
        rows.append((top, bottom))
        text = Text()
        for n, (a, b) in enumerate(rows):
            text.append_text(a)
            text.append("\n")
            text.append_text(b)
            if n < len(rows) - 1:
                text.append("\n")
        if self.note:
            text.append(f"\n{self.note}", style("token-strip--note"))
        return text

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()
