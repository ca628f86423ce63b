"""PNG plots of a report (matplotlib, the optional `plots` extra): step latency per peer, memory
vs stream length (log-log) and the adaptation curve. Small figures, so the PNGs stay well under 150 KB."""

from __future__ import annotations

from pathlib import Path


def write_plots(report: dict, folder: Path) -> tuple[list[str], str | None]:
    """(written paths, a note when matplotlib is missing)."""
    try:  # optional: matplotlib (the `plots` / `bench` extra)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install 'edge-rnn[plots]')"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("bench_latency.png", _latency), ("bench_memory.png", _memory), ("bench_adaptation_curve.png", _curve)):
        fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=90)
        draw(ax, report["sections"])
        fig.tight_layout()
        fig.savefig(folder / name)
        plt.close(fig)
        written.append(str(folder / name))
    return written, None


def _latency(ax, sections) -> None:
    rows = sections["step_latency"]["rows"]
    peers = [rows[0]["value"]["peer"]] + [p["peer"] for p in rows[0]["peers"]]
    width = 0.8 / len(peers)
    for k, peer in enumerate(peers):
        values = [next((e["median"] for e in [r["value"], *r["peers"]] if e["peer"] == peer), 0) for r in rows]
        ax.bar([i + k * width for i in range(len(rows))], values, width, label=peer)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(rows))], [r["name"] for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("us per token (median, log scale)")
    ax.set_title("Step latency, batch 1, one thread", fontsize=9)
    ax.legend(fontsize=6)


def _memory(ax, sections) -> None:
    s = sections["memory"]["series"]
    ax.loglog(s["tokens"], s["runtime_mb"], "o-", label="edge-rnn TBPTT(32,32), RSS growth")
    if s["torch_measured"]:
        n, rss, saved = zip(*s["torch_measured"])
        ax.loglog(n, rss, "s", label="PyTorch full BPTT, RSS growth (measured)")
        ax.loglog(n, saved, "^", label="full BPTT saved activations (measured)")
    if s["computed_mb"]:
        ax.loglog(s["tokens"], s["computed_mb"], "--", label="full BPTT activations (computed)")
    ax.set_xlabel("tokens in the stream")
    ax.set_ylabel("MiB")
    ax.set_title(sections["memory"]["title"], fontsize=9)
    ax.legend(fontsize=6)


def _curve(ax, sections) -> None:
    s = sections["adaptation_curve"]["series"]
    ax.plot(s["position"], s["static"], label="static")
    ax.plot(s["position"], s["online"], label="adapted online (prequential)")
    ax.set_xlabel("position in the text (characters)")
    ax.set_ylabel("bits per character (per chunk)")
    ax.set_title(sections["adaptation_curve"]["title"] + ", " + sections["adaptation_curve"]["rows"][0]["name"], fontsize=8)
    ax.legend(fontsize=7)
