"""Prometheus metrics of tracbot, in the text exposition format.

A deliberately small registry: counters and a histogram that the sender
and the webhook update as they go, and gauges read from the store when
`/metrics` is scraped (inbox lag, outbox depth), so that several processes
sharing one database report the same queue.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Counter:
    """A counter with one label."""

    def __init__(self, name: str, help_: str, label: str) -> None:
        self.name = name
        self.help = help_
        self.label = label
        self.values: dict[str, float] = {}

    def inc(self, label_value: str, amount: float = 1.0) -> None:
        self.values[label_value] = self.values.get(label_value, 0.0) + amount

    def lines(self) -> list[str]:
        lines = _header(self.name, self.help, "counter")
        for value, count in sorted(self.values.items()):
            lines.append(f"{self.name}{{{self.label}={_quote(value)}}} {_num(count)}")
        return lines


class Histogram:
    """A histogram without labels."""

    def __init__(
        self, name: str, help_: str, buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        self.name = name
        self.help = help_
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1

    def lines(self) -> list[str]:
        lines = _header(self.name, self.help, "histogram")
        for bound, count in zip(self.buckets, self.counts, strict=True):
            lines.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {count}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {_num(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


def gauge(name: str, help_: str, value: float) -> list[str]:
    """The lines of a gauge read at scrape time."""
    return [*_header(name, help_, "gauge"), f"{name} {_num(value)}"]


def counter(name: str, help_: str, value: float) -> list[str]:
    """The lines of a counter without labels, kept elsewhere."""
    return [*_header(name, help_, "counter"), f"{name} {_num(value)}"]


def labelled_counter(
    name: str, help_: str, label: str, values: Iterable[tuple[str, float]]
) -> list[str]:
    """The lines of a counter kept elsewhere (e.g. the webhook's tallies)."""
    counter = Counter(name, help_, label)
    for value, count in values:
        counter.inc(value, count)
    return counter.lines()


def exposition(*blocks: list[str]) -> str:
    """Join metric blocks into one scrape answer."""
    return "\n".join(line for block in blocks for line in block) + "\n"


def _header(name: str, help_: str, kind: str) -> list[str]:
    return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return f'"{escaped}"'


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))
