"""The report as Markdown text: one table per section (median [p10-p90], x ratio to each peer),
the way each column was measured under it, so the printed table can go into docs as is; or as
plain text for a terminal (to_plain): per row one line per peer, so no line outgrows the screen."""

from __future__ import annotations

import textwrap

WIDTH = 88  # plain text wraps its prose here


def num(x: float) -> str:
    """Three significant digits without exponents: 0.0123, 4.56, 78.9, 1,234."""
    if x is None:
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) >= 0.001 else f"{x:.2e}"


def cell(entry: dict) -> str:
    text = num(entry["median"])
    if entry.get("n", 1) > 1:
        text += f" [{num(entry['p10'])}-{num(entry['p90'])}]"
    if entry.get("ratio") is not None:
        text += f" (x{entry['ratio']:.2f})"
    return text


def section_text(key: str, sec: dict) -> list[str]:
    lines = [f"### {sec['title']}", ""]
    if not sec["rows"]:
        return lines + [f"- {note}" for note in sec["notes"]] + [""]
    columns: list[str] = []
    for r in sec["rows"]:
        for name in [r["value"]["peer"]] + [p["peer"] for p in r["peers"]]:
            if name not in columns:
                columns.append(name)
    lines.append(f"`{key}`: median [p10-p90] over n samples; (xR) = first column / that column; {sec['better']} is better")
    lines.append("")
    lines.append("| row | unit | " + " | ".join(columns) + " |")
    lines.append("|---|---|" + "---|" * len(columns))
    for r in sec["rows"]:
        by_name = {r["value"]["peer"]: r["value"], **{p["peer"]: p for p in r["peers"]}}
        cells = [cell(by_name[c]) if c in by_name else "" for c in columns]
        lines.append(f"| {r['name']} | {r['unit']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {name}: {how}" for name, how in sec["how"].items()]
    lines += [f"- {note}" for note in sec["notes"]]
    return lines + [""]


def blas(machine: dict) -> str:
    """The BLAS kernel the workers ran, as threadpoolctl saw it: OPENBLAS_CORETYPE can hold OpenBLAS
    to older kernels, so a figure means little without it."""
    threads = machine.get("threads") or {}
    pools = threads.get("threadpoolctl")
    if not pools:
        return "BLAS kernel not known (install threadpoolctl: the dev extra)"
    kernels = ", ".join(f"{p[0]} {p[2] if len(p) > 2 and p[2] else '(architecture not reported)'}, {p[1]} thread(s)"
                        for p in pools)
    core = threads.get("coretype")
    return f"BLAS {kernels}, OPENBLAS_CORETYPE={core}" if core else f"BLAS {kernels}, OPENBLAS_CORETYPE unset"


def to_text(report: dict) -> str:
    m, b = report["machine"], report["bench"]
    v = m["versions"]
    lines = [
        f"## edge-rnn bench{' --quick' if b['quick'] else ''}, {b['started_utc']}, {b['seconds']:.0f} s",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}; numpy {v['numpy']}, onnxruntime "
        f"{v['onnxruntime']}, torch {v['torch']}; load average {m['loadavg_start']} -> {m.get('loadavg_end')}; "
        f"model {b['model']} (sha256 {b['model_sha256'][:12]}); {blas(m)}",
        "",
    ]
    lines += [f"- {note}" for note in b.get("notes", [])] + ([""] if b.get("notes") else [])
    for key, sec in report["sections"].items():
        lines += section_text(key, sec)
    if report.get("plots"):
        lines.append("Plots: " + ", ".join(report["plots"]))
    return "\n".join(lines).rstrip() + "\n"


def _spread(entry: dict) -> str:
    return f"[{num(entry['p10'])}-{num(entry['p90'])}]" if entry.get("n", 1) > 1 else ""


def _wrapped(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ") or [""]


def section_plain(key: str, sec: dict) -> list[str]:
    lines = _wrapped(sec["title"])
    lines.append("=" * max(map(len, lines)))
    if sec["rows"]:
        lines += _wrapped(f"{key}: median [p10-p90] over n samples; x R = the first line / that line; {sec['better']} is better")
    for r in sec["rows"]:
        entries = [r["value"], *r["peers"]]
        medians, spreads = [num(e["median"]) for e in entries], [_spread(e) for e in entries]
        widths = [max(len(e["peer"]) for e in entries), max(map(len, medians)), max(map(len, spreads))]
        lines += ["", f"{r['name']} ({r['unit']})"]
        for e, median, spread in zip(entries, medians, spreads):
            ratio = f"  x{e['ratio']:.2f}" if e.get("ratio") is not None else ""
            line = f"  {e['peer']:<{widths[0]}}  {median:>{widths[1]}} {spread:<{widths[2]}}{ratio}"
            lines.append(line.rstrip())
    if sec["how"] or sec["notes"]:
        lines.append("")
    for name, how in sec["how"].items():
        lines += _wrapped(f"{name}: {how}", "  ")
    for note in sec["notes"]:
        lines += _wrapped(note, "  ")
    return lines + ["", ""]


def to_plain(report: dict) -> str:
    """The report as plain text for a terminal: the same figures as to_text, laid out to be read there."""
    m, b = report["machine"], report["bench"]
    v = m["versions"]
    lines = [f"edge-rnn bench{' --quick' if b['quick'] else ''}, {b['started_utc']}, {b['seconds']:.0f} s"]
    lines += _wrapped(f"{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}; numpy {v['numpy']}, "
                      f"onnxruntime {v['onnxruntime']}, torch {v['torch']}; load average {m['loadavg_start']} -> "
                      f"{m.get('loadavg_end')}; model {b['model']} (sha256 {b['model_sha256'][:12]}); {blas(m)}")
    lines.append("")
    for note in b.get("notes", []):
        lines += _wrapped(note, "  ")
    lines += [""] if b.get("notes") else []
    for key, sec in report["sections"].items():
        lines += section_plain(key, sec)
    if report.get("plots"):
        lines += _wrapped("Plots: " + ", ".join(report["plots"]))
    return "\n".join(lines).rstrip() + "\n"
