"""F1 (or `?` outside a text field): what the app does and every key, in one scrollable page."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# tracer-tui

**Causal tracing** (Meng et al., *Locating and Editing Factual Associations in GPT*, 2022):
corrupt the subject of a prompt, then restore one hidden state (or an MLP / attention output)
at a time from the clean run and measure how much of the answer's probability comes back.

## A run, step by step
1. Type a **prompt** and the **subject** inside it (the Eiffel example is pre-filled).
   A **target** is optional (default: the clean run's top token). A **corrupted** prompt
   switches from noise to substitution; its tokens show under the prompt's, aligned.
2. In the **token strip**, the subject is underlined and its last token is chosen.
   Click chips (or focus the strip, move with ←/→ and press space) to choose the positions
   to restore in the *chosen positions* view.
3. Press **enter** in the form or **ctrl+r**. A first-order estimate of every cell comes first (the
   title says ESTIMATE, the table marks its cells `≈`); exact cells replace it as they finish; **esc**
   cancels (a cancelled re-run keeps the previous grid). **ctrl+y** then shows estimate minus exact.
4. Beside the grid: the target, p_clean and p_corrupted, both runs' top-3, the noise rule and
   its std, and a **warnings** badge (**F8** or a click shows the messages): read them first.
5. **ctrl+s** writes the grid as text (plot + numbers), CSV and JSON (and SVG/PDF where available)
   to the export folder.

## Views
* *all tokens* (the default): the paper's picture, tokens × layers for one kind (**ctrl+g** picks
  the kind; hidden shows both sites).
* *chosen positions*: rows are kinds (hidden, mlp, attn), columns are layers.
* **ctrl+n** cycles the metric: recovery %, probability, logit difference.
* Colours: recovery on a fixed 0-100% scale, probability from p_corrupted to p_clean (ROME's);
  **F7** switches to the cells' own range. `░` marks cells indistinguishable from the corrupted
  run (noise mode: p_corrupted inside the 95% interval); the table shows `value±half-width`;
  "n/a" is a cell without a value (e.g. recovery when the total effect is below 0.05).
* **F2** grid · **F3** table · **F4** log · **F5** settings (samples, noise rule, window, kinds, severed paths).
* **Samples auto** (F5, Samples: `auto`): every cell first gets 3 noise samples, then 6, 12, … up to 40
  while its 95% interval of P is wider than the **CI width** (0.02); the cursor's line says each
  finished cell's count. **ctrl+f** stops refining: every cell keeps the samples it has.

## Keys
| key | action |
|---|---|
| enter / ctrl+r | run the trace for the current view |
| esc | cancel the running trace |
| ctrl+f | Samples auto: stop refining; every cell keeps the samples it has and the trace finishes |
| ctrl+o | toggle view: chosen positions ↔ all tokens |
| ctrl+g | next kind (all-tokens view) |
| ctrl+n | next metric |
| ctrl+s | export the current grid |
| F7 | fixed ↔ auto colour scale |
| ctrl+y | a finished grid ↔ its first-order estimate minus the exact values (the estimate's error) |
| ←↑↓→ / click (grid focused: tab) | move the cursor; the line above the grid reads its cell: token, layer, kind, value, 95% interval, samples |
| F9 | top-5 of the patched run at the cursor's cell |
| F8 | the trace's warnings |
| F10 | robustness: the fact under several corruptions, and whether each kind's peak moves |
| F6 | sweeps: average indirect effect over many facts (open a results file or run a sweep) |
| ctrl+t | next theme (dark, light, high-contrast); ctrl+p → "theme" for all |
| ctrl+p | command palette: every action by name |
| F1 (? outside a text field) | this help |
| ctrl+q | quit |

Settings and the theme are kept for the next launch. Themes are TOML files: copy one from
`themes/` into the `themes/` folder of the config folder (`~/.config/tracer-tui/` on Linux).
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90%; max-width: 100; height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    """
    BINDINGS = [
        Binding("escape,q,f1,question_mark", "dismiss", "Close help"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)

    def action_dismiss(self, result=None):  # type: ignore[override]
        return super().action_dismiss(result)
