"""Prompt entry: prompt, subject, optional target, optional corrupted prompt (substitution)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label

EIFFEL_PROMPT = "The Eiffel Tower is located in the city of"
EIFFEL_SUBJECT = "Eiffel Tower"


@dataclass
class PromptValues:
    prompt: str
    subject: str
    target: str | None
    corrupted: str | None


class PromptForm(Vertical):
    DEFAULT_CSS = """
    PromptForm { height: auto; padding: 0 1; }
    PromptForm > Horizontal { height: 1; }
    PromptForm Label { width: 10; color: $text-muted; }
    PromptForm Label.second { width: 8; padding-left: 1; }
    PromptForm Input { width: 1fr; }
    PromptForm #subject { width: 2fr; }
    PromptForm #target { width: 1fr; }
    """

    @dataclass
    class Changed(Message):
        """The prompt or the subject changed (the token strip follows)."""

        form: "PromptForm"
        prompt: str
        subject: str

    @dataclass
    class Submitted(Message):
        """Enter was pressed in one of the inputs."""

        form: "PromptForm"

    def __init__(self, prompt: str = EIFFEL_PROMPT, subject: str = EIFFEL_SUBJECT, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._initial = (prompt, subject)

    def compose(self) -> ComposeResult:
        prompt, subject = self._initial
        with Horizontal():
            yield Label("Prompt")
            yield Input(prompt, placeholder="the prompt; its next token is traced", id="prompt", compact=True,
                        tooltip="The model predicts the token after this text.")
        with Horizontal():
            yield Label("Subject")
            yield Input(subject, placeholder="part of the prompt to corrupt", id="subject", compact=True,
                        tooltip="The words whose embeddings get noised (or substituted).")
            yield Label("Target", classes="second")
            yield Input(placeholder="(clean top token)", id="target", compact=True,
                        tooltip="The answer token to measure; empty: the clean run's top token.")
        with Horizontal():
            yield Label("Corrupted")
            yield Input(placeholder="optional: a prompt to substitute instead of adding noise", id="corrupted",
                        compact=True, tooltip="Set this to switch from noise to substitution (same token count).")

    def values(self) -> PromptValues:
        get = lambda name: self.query_one(f"#{name}", Input).value  # noqa: E731
        target, corrupted = get("target").strip(), get("corrupted")
        return PromptValues(get("prompt"), get("subject"), target or None, corrupted if corrupted.strip() else None)

    def set_values(self, **values: str) -> None:
        for name, value in values.items():
            self.query_one(f"#{name}", Input).value = value

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in ("prompt", "subject"):
            v = self.values()
            self.post_message(self.Changed(self, v.prompt, v.subject))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(self))
