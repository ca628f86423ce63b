"""`edge-rnn demo [MODEL]`: live autocomplete in the terminal that learns as you type.

A curses program (works on a plain Linux terminal and under tmux): the text you type,
the top suggestion as grey ghost text after the cursor, the suggestions below it, and
a status line with the keystroke-to-suggestions latency and how many characters the
model has learned from. Tab accepts the highlighted suggestion and adds a space, Up/Down choose,
Backspace deletes, Ctrl-L turns learning on/off, Ctrl-R resets to the base model,
Esc or Ctrl-C quits. Keys that arrive together (a paste) are typed as one prefill.
Like a phone keyboard, punctuation typed right after that automatic space replaces it
("morning." not "morning .") and a space typed there is absorbed.
Learning runs after the suggestions are drawn and only while no key waits, so the
latency shown is keystroke to suggestions.
"""

from __future__ import annotations

import math
import os
import select
import statistics
import sys
import time
from collections import deque

from tqdm import tqdm

import edge_rnn
from edge_rnn.app.autocomplete import Autocompleter, freeze_heap
from edge_rnn.app.beam import BeamConfig
from edge_rnn.corpus import read_text_file
from edge_rnn.errors import EdgeRNNError

try:
    import curses
except ImportError:  # Windows' Python has no curses; the CLI must still load
    curses = None

ESC, CTRL_C, CTRL_D, CTRL_L, CTRL_R = "\x1b", "\x03", "\x04", "\x0c", "\x12"
BACKSPACES = ("\x7f", "\x08") + ((curses.KEY_BACKSPACE,) if curses else ())
ENTERS = ("\n", "\r") + ((curses.KEY_ENTER,) if curses else ())
HELP = "Tab accept  Up/Down choose  Ctrl-L learning  Ctrl-R reset learning  Esc quit"
CLOSING = ".,;:!?)]}"  # punctuation that takes the place of an automatic space, as on a phone keyboard
NOTICE_SECONDS = 3.0  # how long a notice stays on the status line


class Demo:
    """Screen state and key handling around one Autocompleter."""

    def __init__(self, screen, ac, title: str):
        self.screen, self.ac, self.title = screen, ac, title
        self.selected = 0
        self.latencies: deque[float] = deque(maxlen=500)  # ms per keystroke with model work
        self.notice, self.notice_until = "", 0.0
        self.auto_space = False  # the text ends in the space that accepting a suggestion added

    def run(self) -> None:
        curses.raw()  # Ctrl-C arrives as a key: quitting is one clean path
        curses.noecho()
        self.screen.keypad(True)
        self._colors()
        self.draw()
        while True:
            keys = self._read_keys()
            if not all(self.handle(key) for key in keys):
                return
            self.draw()
            if self.ac.pending and not select.select([sys.stdin], [], [], 0)[0]:
                self.ac.learn_pending()  # after the suggestions are on screen, while no key waits
                self.draw()

    def _read_keys(self) -> list:
        """The next key, plus any already waiting; runs of printable keys merge into one paste.
        While a notice shows, waits at most until it expires (then no keys: a redraw clears it)."""
        left = self.notice_until - time.monotonic()
        self.screen.timeout(max(1, math.ceil(1000 * left)) if self.notice and left > 0 else -1)
        try:
            keys = [self.screen.get_wch()]
        except curses.error:
            return []
        self.screen.nodelay(True)
        while len(keys) < 100_000:
            try:
                keys.append(self.screen.get_wch())
            except curses.error:
                break
        merged: list = []
        for key in keys:
            if _printable(key) and merged and _printable(merged[-1]):
                merged[-1] += key
            else:
                merged.append(key)
        return merged

    def handle(self, key) -> bool:
        """Apply one key (or pasted run); False means quit."""
        if key in (ESC, CTRL_C, CTRL_D):
            return False
        auto_space, self.auto_space = self.auto_space, False
        if key in (curses.KEY_UP, curses.KEY_DOWN):
            count = max(1, len(self.ac.suggestions))
            self.selected = (self.selected + (1 if key == curses.KEY_DOWN else -1)) % count
            self.auto_space = auto_space
            return True
        t0 = time.perf_counter()
        if key == "\t":
            if self.selected < len(self.ac.suggestions):
                self.ac.accept(self.selected)
                self.auto_space = self.ac.accept_suffix == " "
        elif key in BACKSPACES:
            self.ac.backspace()
        elif key in ENTERS:
            self.ac.type("\n")
        elif key == CTRL_L:
            self.ac.learning = not self.ac.learning  # the status line's "learning on/off" shows it
            return True
        elif key == CTRL_R:
            self.ac.reset_learning()
            self.show_notice("back to the base model")
        elif _printable(key):
            typed = after_auto_space(key) if auto_space else (0, key)
            if typed[0]:
                self.ac.backspace(typed[0])
            if typed[1]:
                self.ac.type(typed[1])
        else:
            return True  # other keys (function keys, resize) only redraw
        self.ac.suggestions  # noqa: B018 - computed here so the latency includes the search
        self.latencies.append(1000 * (time.perf_counter() - t0))
        self.selected = 0
        return True

    def show_notice(self, text: str) -> None:
        self.notice, self.notice_until = text, time.monotonic() + NOTICE_SECONDS

    # --- drawing ----------------------------------------------------------------------------
    def _colors(self) -> None:
        self.dim = curses.A_DIM
        if curses.has_colors():
            curses.start_color()
            try:
                curses.use_default_colors()
                curses.init_pair(1, 8 if curses.COLORS > 8 else curses.COLOR_BLUE, -1)
                self.dim = curses.color_pair(1)
            except curses.error:
                pass

    def draw(self) -> None:
        screen = self.screen
        screen.erase()
        height, width = screen.getmaxyx()
        if height < 6 or width < 20:
            self._put(0, 0, "window too small", 0)
            screen.refresh()
            return
        self._put(0, 0, f" edge-rnn demo - {self.title} ".ljust(width), curses.A_REVERSE)
        self._put(1, 0, HELP, self.dim)
        options = self.ac.suggestions
        ghost = _shown(options[self.selected][0]) if self.selected < len(options) else ""
        y, x = self._draw_text(3, height - 4, width, ghost)
        self._put(height - 3, 0, "suggestions  ", curses.A_BOLD)
        col = len("suggestions  ")
        for i, (completion, prob) in enumerate(options):
            label = f"{_shown(self.ac.word)}[{_shown(completion)}] {_percent(prob)}"
            self._put(height - 3, col, label, curses.A_REVERSE if i == self.selected else 0)
            col += len(label) + 3
        if not options:
            self._put(height - 3, col, "(no suggestion)", self.dim)
        self._put(height - 1, 0, self._status(), curses.A_REVERSE)
        screen.move(y, x)
        screen.refresh()

    def _draw_text(self, top: int, bottom: int, width: int, ghost: str) -> tuple[int, int]:
        """The tail of the text that fits rows top..bottom, then the ghost; returns the cursor."""
        rows, usable = bottom - top + 1, width - 1
        lines = [""]
        for char in _shown(self.ac.text[-rows * usable:], newlines=True):
            if char == "\n" or len(lines[-1]) >= usable:
                lines.append("")
            if char != "\n":
                lines[-1] += char
        lines = lines[-rows:]
        for i, text in enumerate(lines):
            self._put(top + i, 0, text, 0)
        y, x = top + len(lines) - 1, len(lines[-1])
        self._put(y, x, ghost[: max(0, usable - x)], self.dim)
        return y, min(x, usable)

    def _status(self) -> str:
        stats = self.ac.stats()
        if self.latencies:
            latency = (f"latency {self.latencies[-1]:.1f} ms (median {statistics.median(self.latencies):.1f}, "
                       f"p95 {percentile(self.latencies, 95):.1f})")
        else:
            latency = "latency - ms"
        bpc = f"{stats['bpc']:.2f} bpc" if stats["tokens"] else "- bpc"
        learning = "learning on" if stats["learning"] else "learning off"
        parts = [latency, f"learned {stats['tokens']} tokens", bpc, learning]
        if self.notice and time.monotonic() < self.notice_until and self.notice not in parts:
            parts.append(self.notice)
        return " " + " | ".join(parts)

    def _put(self, y: int, x: int, text: str, attr: int) -> None:
        height, width = self.screen.getmaxyx()
        if 0 <= y < height and x < width - 1:
            try:
                self.screen.addstr(y, x, text[: width - 1 - x], attr)
            except curses.error:
                pass  # writing the last cell of the screen raises; nothing was lost


def after_auto_space(typed: str) -> tuple[int, str]:
    """(characters to delete, text to type) for keys typed right after an automatic space:
    closing punctuation replaces the space, a typed space is absorbed."""
    if typed[0] == " ":
        return 0, typed[1:]
    if typed[0] in CLOSING:
        return 1, typed
    return 0, typed


def percentile(values, q: float) -> float:
    """The nearest-rank q-th percentile: the smallest value with at least q% of them at or below it
    (never below the median, unlike indexing at q% of n - 1)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _printable(key) -> bool:
    return isinstance(key, str) and key.isprintable()


def _percent(p: float) -> str:
    return f"{100 * p:.0f}%" if p >= 0.005 else "<1%"


def _shown(text: str, newlines: bool = False) -> str:
    """Text safe to draw: control characters (which would move the cursor) become '?'."""
    return "".join(c if c.isprintable() or (newlines and c == "\n") else "?" for c in text)


LEARN_CHUNK = 2048  # characters typed per call while learning from a file: bounded memory, a moving bar


def learn_from(ac, text: str, progress=None) -> dict:
    """Type `text` into the Autocompleter with learning on and learn from all of it, then start a
    fresh text (what was learned stays); `progress(chars)` after each chunk. Returns ac.stats()."""
    learning, ac.learning = ac.learning, True
    for start in range(0, len(text), LEARN_CHUNK):
        chunk = text[start : start + LEARN_CHUNK]
        ac.type(chunk if start + LEARN_CHUNK < len(text) else chunk + "\n")  # the end commits the last word
        ac.learn_pending()
        if progress is not None:
            progress(len(chunk))
    ac.reset()
    ac.learning = learning
    return ac.stats()


def cmd_demo(args) -> None:
    BeamConfig(n=args.n, deadline_ms=args.deadline_ms)  # impossible settings fail first, like a bad file, before the model loads
    text = read_text_file(args.learn_from) if args.learn_from else ""
    if curses is None:
        raise EdgeRNNError("the terminal demo needs curses, which this Python lacks; use `edge-rnn serve` for the web page")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise EdgeRNNError("the demo needs an interactive terminal; run it in a terminal or tmux, not through a pipe")
    model = edge_rnn.load(args.model, backend=args.backend)
    ac = Autocompleter(model, n=args.n, learn=not args.no_learn, run_on=args.run_on, defer_learning=True,
                       deadline_ms=args.deadline_ms)
    if text:
        with tqdm(total=len(text), desc=f"learning from {os.path.basename(args.learn_from)}", unit="char",
                  unit_scale=True, file=sys.stderr, leave=False) as bar:
            stats = learn_from(ac, text, progress=bar.update)
        print(f"learned from {stats['tokens']} tokens of {args.learn_from} ({stats['bpc']:.2f} bpc online)", file=sys.stderr)
    freeze_heap()
    os.environ.setdefault("ESCDELAY", "25")  # Esc quits without curses' one-second wait
    title = os.path.basename(str(model.file.path))
    try:
        curses.wrapper(lambda screen: Demo(screen, ac, title).run())
    except KeyboardInterrupt:
        pass
    stats = ac.stats()
    print(f"learned from {stats['tokens']} tokens ({stats['updates']} updates)")
    if args.save:
        print(f"wrote {ac.save(args.save)}")


def register(subparsers) -> None:
    d = subparsers.add_parser("demo", help="live autocomplete in the terminal that learns as you type")
    d.add_argument("model", nargs="?", help="model file (default: the shipped model)")
    d.add_argument("-n", type=int, default=3, help="suggestions shown")
    d.add_argument("--no-learn", action="store_true", help="do not adapt to what you type")
    d.add_argument("--run-on", action="store_true", help="suggestions also finish the next word")
    d.add_argument("--deadline-ms", type=float, help="a search that has run this long shows the best completions it has "
                                                     "finished (for a slow device; default: every search runs to its end)")
    d.add_argument("--learn-from", metavar="TEXT", help="a text file of yours to learn from first (with a progress bar), "
                                                         "so the suggestions start in your words")
    d.add_argument("--save", metavar="PATH", help="write the adapted model here on exit")
    d.add_argument("--backend", default="numpy", choices=["numpy", "cupy"], help="where the model runs and learns")
    d.set_defaults(func=cmd_demo)
