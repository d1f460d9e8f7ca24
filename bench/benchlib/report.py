"""Results: per-round samples for both servers, their medians and ratios, and the Markdown and CSV.

A ratio is the median of per-round ratios (shoal's round-r value over redis's round-r value), not the
ratio of medians: both runs of a round are close in time, so machine drift cancels within a pair.
"""

import csv
import io
import os
import statistics
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Metric:
    key: str
    title: str  # column heading
    better: str  # "higher" or "lower": which way is good, shown as an arrow
    fmt: str = "{:.3g}"


@dataclass
class Row:
    """One case: a label, its metrics, and per-side, per-round samples."""

    group: str
    case: str
    metrics: list[Metric]
    sides: tuple[str, str] = ("shoal", "redis")
    samples: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, side: str, round_no: int, values: dict[str, float]) -> None:
        self.samples.setdefault(side, {})[round_no] = values

    def fail(self, side: str, round_no: int, reason: str) -> None:
        self.failures.append(f"{side} (round {round_no + 1}): {reason}")

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def values(self, side: str, key: str) -> list[float]:
        rounds = self.samples.get(side, {})
        return [v[key] for _, v in sorted(rounds.items()) if v.get(key) is not None]

    def median(self, side: str, key: str) -> float | None:
        vals = self.values(side, key)
        return statistics.median(vals) if vals else None

    def ratio(self, key: str) -> float | None:
        a, b = (self.samples.get(s, {}) for s in self.sides)
        ratios = [a[r][key] / b[r][key] for r in sorted(a.keys() & b.keys())
                  if a[r].get(key) is not None and b[r].get(key)]
        return statistics.median(ratios) if ratios else None

    def rounds(self) -> int:
        a, b = (self.samples.get(s, {}) for s in self.sides)
        return len(a.keys() & b.keys())

    def broken(self) -> bool:
        """True if a run failed or a side produced no numbers at all."""
        return bool(self.failures) or any(not self.samples.get(s) for s in self.sides)

    def status(self) -> str:
        missing = [s for s in self.sides if not self.samples.get(s)]
        if not self.broken():
            return "ok"
        parts = [f"no numbers for {s}" for s in missing] + self.failures
        return "FAILED: " + "; ".join(parts)


@dataclass
class Group:
    key: str
    title: str
    description: str
    rows: list[Row] = field(default_factory=list)


def _cell(row: Row, m: Metric) -> str:
    a, b = (row.median(s, m.key) for s in row.sides)
    fmt = lambda v: "–" if v is None else m.fmt.format(v)  # noqa: E731
    r = row.ratio(m.key)
    return f"{fmt(a)} / {fmt(b)}" + ("" if r is None else f" (×{r:.2f})")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(header: list[str], groups: list[Group]) -> str:
    out = io.StringIO()
    for line in header:
        out.write(line + "\n")
    out.write("\nEach cell: **shoal / redis (×ratio)**; the ratio is the median over rounds of shoal÷redis "
              "from the same round. ↑ higher is better, ↓ lower is better.\n")
    for group in groups:
        if not group.rows:
            continue
        metrics = group.rows[0].metrics
        out.write(f"\n## {group.title}\n\n{group.description}\n\n")
        arrows = {"higher": "↑", "lower": "↓"}
        out.write("| case | " + " | ".join(f"{m.title} {arrows[m.better]}" for m in metrics) + " | rounds | status |\n")
        out.write("|---" * (len(metrics) + 3) + "|\n")
        for row in group.rows:
            cells = [_md_escape(row.case)] + [_cell(row, m) for m in metrics]
            status = "ok" if not row.broken() else "**FAILED**"
            out.write("| " + " | ".join(cells) + f" | {row.rounds()} | {status} |\n")
        notes = [f"- {row.case}: {_md_escape(n)}" for row in group.rows for n in row.notes]
        fails = [f"- **{row.case}**: {_md_escape(row.status())}" for row in group.rows if row.broken()]
        if notes:
            out.write("\nNotes:\n" + "\n".join(notes) + "\n")
        if fails:
            out.write("\nFailures:\n" + "\n".join(fails) + "\n")
    return out.getvalue()


CSV_FIELDS = ["date", "group", "case", "metric", "better", "shoal", "redis", "ratio", "rounds",
              "shoal_samples", "redis_samples", "status"]


def csv_text(date: str, groups: list[Group]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for group in groups:
        for row in group.rows:
            for m in row.metrics:
                a, b = (row.median(s, m.key) for s in row.sides)
                r = row.ratio(m.key)
                samples = [" ".join(f"{v:.6g}" for v in row.values(s, m.key)) for s in row.sides]
                w.writerow([date, group.key, row.case, m.title, m.better, _num(a), _num(b), _num(r),
                            row.rounds(), *samples, row.status()])
    return out.getvalue()


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
