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
        """The prompt, the subject or the corrupted prompt changed (the token strip follows)."""

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
        self.inputs: dict[str, Input] = {}  # kept, not queried: reading a field never fails, even mid-teardown

    def compose(self) -> ComposeResult:
        prompt, subject = self._initial
        self.inputs = {
            "prompt": Input(prompt, placeholder="the prompt; its next token is traced", id="prompt", compact=True,
                            select_on_focus=False, tooltip="The model predicts the token after this text."),
            "subject": Input(subject, placeholder="part of the prompt to corrupt", id="subject", compact=True,
                             select_on_focus=False, tooltip="The words whose embeddings get noised (or substituted)."),
            "target": Input(placeholder="(clean top token)", id="target", compact=True, select_on_focus=False,
                            tooltip="The answer to measure (several tokens are fine); empty: the clean run's top token."),
            "corrupted": Input(placeholder="optional: a prompt to substitute instead of adding noise", id="corrupted",
                               compact=True, select_on_focus=False,
                               tooltip="Set this to switch from noise to substitution."),
        }
        with Horizontal():
            yield Label("Prompt")
            yield self.inputs["prompt"]
        with Horizontal():
            yield Label("Subject")
            yield self.inputs["subject"]
            yield Label("Target", classes="second")
            yield self.inputs["target"]
        with Horizontal():
            yield Label("Corrupted")
            yield self.inputs["corrupted"]

    def values(self) -> PromptValues:
        get = lambda name: self.inputs[name].value  # noqa: E731
        target, corrupted = get("target").strip(), get("corrupted")
        return PromptValues(get("prompt"), get("subject"), target or None, corrupted if corrupted.strip() else None)

    def set_values(self, **values: str) -> None:
        for name, value in values.items():
            self.inputs[name].value = value

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in ("prompt", "subject", "corrupted"):
            v = self.values()
            self.post_message(self.Changed(self, v.prompt, v.subject))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Submitted(self))
