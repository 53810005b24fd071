"""The table `python -m bench` prints: each figure next to its target."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class Row:
    section: str
    figure: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target, just a number
    note: str = ""

    @property
    def verdict(self) -> str:
        return {True: "ok", False: "MISSED", None: ""}[self.met]


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def megabytes(value: float) -> str:
    return f"{value:.0f} MB"


def table(rows: list[Row]) -> str:
    headers = ("figure", "measured", "target", "", "note")
    fields = ("figure", "value", "target", "verdict", "note")
    width = [max(len(h), *(len(getattr(r, f)) for r in rows)) if rows else len(h)
             for h, f in zip(headers, fields, strict=True)]
    lines = []
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            lines.append("")
            lines.append(f"== {section}")
            lines.append("  ".join(h.ljust(w) for h, w in zip(headers, width, strict=True)).rstrip())
        cells = (r.figure, r.value, r.target, r.verdict, r.note)
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, width, strict=True)).rstrip())
    return "\n".join(lines[1:])


def as_json(rows: list[Row]) -> list[dict]:
    return [{**asdict(r), "verdict": r.verdict} for r in rows]
