"""A simulated fleet: one device per text, each in its own style, from installed corpora.

Shakespeare devices hold one play each (`load_shakespeare()`); other-style devices hold a
piece of a Debian text (`other_style_text`: fortunes, fortunes-science, gpl-3) cut at
paragraph boundaries. Held-out devices are drawn first and never take part in training.
Everything is deterministic, so a Ray worker rebuilds the same fleet from its spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest

from edge_rnn.corpus import OTHER_STYLE, load_shakespeare, other_style_text, shakespeare_paths
from edge_rnn.errors import SettingsError

PIECE_CHARS = 12_000  # an other-style device holds about this much text
OTHER_EVERY = 3  # every third participating device writes in another style than Shakespeare


@dataclass(frozen=True)
class Device:
    """One device: a name, a style and the text only it sees."""

    name: str
    style: str
    text: str

    def chunk(self, round_: int, chars: int) -> str:
        """The `chars` characters this device writes in round `round_` (1-based); wraps around
        a text shorter than rounds x chars, so every round has the same budget."""
        if chars >= len(self.text):
            return self.text
        start = ((round_ - 1) * chars) % len(self.text)
        piece = self.text[start : start + chars]
        return piece + self.text[: chars - len(piece)]


@dataclass(frozen=True)
class Fleet:
    """Participating devices (Flower nodes, in partition-id order) and held-out devices."""

    participants: tuple[Device, ...]
    heldout: tuple[Device, ...] = ()

    def resolve(self) -> "Fleet":
        return self


@dataclass(frozen=True)
class FleetSpec:
    """The built-in fleet by size; cheap to pickle into Ray workers, built there on first use."""

    devices: int = 20
    holdout: int = 4

    def resolve(self) -> Fleet:
        return builtin_fleet(self.devices, self.holdout)


def _pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """Cut a text into pieces of about `size` characters at blank lines (a fortune, a clause)."""
    pieces, current = [], []
    for para in text.split("\n\n"):
        current.append(para)
        if sum(map(len, current)) >= size:
            pieces.append("\n\n".join(current) + "\n")
            current = []
    if current and sum(map(len, current)) >= size // 2:
        pieces.append("\n\n".join(current) + "\n")
    return pieces


def other_style_devices() -> list[list[Device]]:
    """Other-style devices, one list per source: fortunes-science, gpl-3, fortunes."""
    names = sorted(OTHER_STYLE, key=lambda n: (n != "fortunes-science", n != "gpl-3"))
    return [[Device(f"{n}#{i}", n, piece) for i, piece in enumerate(_pieces(other_style_text(n)))] for n in names]


def play_devices() -> list[Device]:
    names = [p.stem for p in shakespeare_paths()]
    return [Device(f"play:{n}", "shakespeare", t) for n, t in zip(names, load_shakespeare())]


@lru_cache(maxsize=4)
def builtin_fleet(devices: int = 20, holdout: int = 4) -> Fleet:
    """`devices` participants (every third one another style) and `holdout` held-out devices
    (half plays, half other style: the last piece of each source in turn), disjoint."""
    if devices < 1 or holdout < 0:
        raise SettingsError(f"need at least 1 device and holdout >= 0, got devices={devices}, holdout={holdout}")
    plays, sources = play_devices(), other_style_devices()
    held_plays, held = holdout - holdout // 2, []
    for k in range(holdout // 2):
        held.append(sources[k % len(sources)].pop())
    held = plays[len(plays) - held_plays:] + held if held_plays else held
    plays = plays[: len(plays) - held_plays]
    others = [d for group in zip_longest(*sources) for d in group if d is not None]  # sources interleaved
    n_other = devices // OTHER_EVERY
    if n_other > len(others) or devices - n_other > len(plays):
        raise SettingsError(
            f"{devices} devices need {devices - n_other} plays and {n_other} other-style texts, but after holding out "
            f"{holdout} the built-in fleet has {len(plays)} plays and {len(others)} other-style texts; ask for fewer devices"
        )
    it_plays, it_others = iter(plays), iter(others)
    chosen = [next(it_others) if i % OTHER_EVERY == OTHER_EVERY - 1 else next(it_plays) for i in range(devices)]
    return Fleet(tuple(chosen), tuple(held))
