"""The command palette (ctrl+p) offers every action by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (title, help, action string): on the trace screen, or the app's where it starts with "app."
COMMANDS = [
    ("Run trace", "trace the prompt for the current view", "run"),
    ("Cancel run", "stop the running trace", "cancel"),
    ("Stop refining (ctrl+f)", "Samples auto: no more samples; every cell keeps the ones it has, the trace finishes",
     "stop_refining(True)"),
    ("Export grid", "write the grid as .txt, .csv, .json (and .svg/.pdf with tracer.render.figures)", "export"),
    ("Toggle view", "all tokens <-> chosen positions", "toggle_view"),
    ("Colour scale: fixed / auto", "recovery 0-100% and p_corrupted..p_clean, or the cells' own range", "toggle_scale"),
    ("Estimate minus exact (ctrl+y)", "a finished grid <-> its first-order estimate minus the exact values",
     "toggle_estimate_error"),
    ("Inspect cell: top-5 (F9)", "the patched run's top-5 next tokens at the grid cursor's cell", "inspect"),
    ("Show warnings", "the trace's guards: what to distrust in this grid", "show_warnings"),
    ("Next kind", "hidden -> mlp -> attn in the all-tokens view", "next_kind"),
    ("Next metric", "recovery % -> probability -> logit difference", "next_metric"),
    ("Show grid", "the heatmap tab", "show_tab('tab-grid')"),
    ("Show table", "the numbers tab", "show_tab('tab-table')"),
    ("Show log", "settings, predictions and timings of every run", "show_tab('tab-log')"),
    ("Show settings", "kinds, samples, noise rule, window, seed, sever, export folder", "show_tab('tab-settings')"),
    ("Choose positions: subject's last token", "reset the token strip's selection", "select_subject_last"),
    ("Next theme", "cycle dark, light, high-contrast", "app.next_theme"),
    ("Sweeps: average indirect effect", "open a results file or run a sweep over many facts", "sweeps"),
    ("Robustness: does the peak move?", "trace the fact under several corruptions (F10)", "robustness"),
    ("Help", "what the app does and every key", "app.help"),
]


class TracerCommands(Provider):
    """Actions by name, plus 'Theme: <name>' for every registered tracer theme."""

    def _commands(self) -> list[tuple[str, str, str]]:
        items = list(COMMANDS)
        for name in getattr(self.app, "tracer_theme_names", []):
            items.append((f"Theme: {name}", f"switch to the {name} theme", f"app.set_theme({name!r})"))
        return items

    def _runner(self, action: str):
        """Run `action` on the trace screen (the app's for "app.…") once the palette has closed."""
        screen = getattr(self.app, "trace_screen", None)
        return partial(self.app.run_action, action, screen)

    async def discover(self) -> Hits:
        for title, help_text, action in self._commands():
            yield DiscoveryHit(title, self._runner(action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, action in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._runner(action), help=help_text)
