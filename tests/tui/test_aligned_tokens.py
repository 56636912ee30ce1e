"""Issue 15.2 in the app: the corrupted prompt's tokens under the clean ones, aligned, as the user types."""

from __future__ import annotations

from textual.widgets import Input
from tui_helpers import ready, wait_for

from tui.app import make_app
from tui.screens.trace import aligned_tokens

CORRUPTED = "The Louvre Museum is located in the city of"


async def test_the_corrupted_prompt_shows_under_the_tokens_as_it_is_typed(engine):
    app = make_app(engine=engine)
    async with app.run_test(size=(160, 40)) as pilot:
        await ready(pilot)
        strip = app.trace_screen.strip
        assert strip.aligned is None and "Corrupted" not in str(strip.render())
        app.query_one("#corrupted", Input).value = CORRUPTED
        await wait_for(pilot, lambda: strip.aligned is not None or bool(strip.note), what="the aligned tokens")
        corrupted, _ = engine.tokenize(CORRUPTED)
        clean = strip.tokens
        assert len(strip.aligned) == len(clean)
        assert strip.aligned[0] == corrupted[0] == clean[0]  # the shared prefix, token by token
        assert strip.aligned[-1] == corrupted[-1] == clean[-1]  # the shared suffix
        lines = str(strip.render()).splitlines()
        assert lines[1].startswith("Corrupted ") and " of" not in lines[1][:10]
        app.query_one("#corrupted", Input).value = ""
        await wait_for(pilot, lambda: strip.aligned is None, what="back to one line")


def test_aligned_tokens_without_a_corrupted_prompt_and_for_the_same_prompt(engine):
    assert aligned_tokens(engine, ["The"], None) == (None, "")
    prompt = "The Eiffel Tower is located in the city of"
    tokens, _ = engine.tokenize(prompt)
    assert aligned_tokens(engine, list(tokens), prompt) == (list(tokens), "")
