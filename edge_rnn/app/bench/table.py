"""The report as Markdown text: one table per section (median [p10-p90], x ratio to each peer),
the way each column was measured under it, so the printed table can go into docs as is."""

from __future__ import annotations


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


def to_text(report: dict) -> str:
    m, b = report["machine"], report["bench"]
    v = m["versions"]
    lines = [
        f"## edge-rnn bench{' --quick' if b['quick'] else ''}, {b['started_utc']}, {b['seconds']:.0f} s",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['system']}, Python {m['python']}; numpy {v['numpy']}, onnxruntime "
        f"{v['onnxruntime']}, torch {v['torch']}; load average {m['loadavg_start']} -> {m.get('loadavg_end')}; "
        f"model {b['model']} (sha256 {b['model_sha256'][:12]})",
        "",
    ]
    lines += [f"- {note}" for note in b.get("notes", [])] + ([""] if b.get("notes") else [])
    for key, sec in report["sections"].items():
        lines += section_text(key, sec)
    if report.get("plots"):
        lines.append("Plots: " + ", ".join(report["plots"]))
    return "\n".join(lines).rstrip() + "\n"
