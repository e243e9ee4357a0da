"""The end-of-run report: what the client measured, and what each sidecar says about each hop.

Hop latencies come from the sidecars' `sidecar_request_duration_seconds` histograms, so
they are estimates the way a Prometheus dashboard's are: `histogram_quantile` finds the
bucket holding the wanted rank and interpolates linearly inside it. With buckets at
0.5, 1, 2.5, 5 ms, a p99 of "2.1 ms" means "between 1 and 2.5 ms, nearer the top".
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from ..telemetry import names
from .traffic import ENTRIES, EntryStats

__all__ = ["HOPS", "Hop", "Scrape", "histogram_quantile", "nearest_rank", "parse", "render"]

Series = tuple[str, str]  # (direction, service)


@dataclass(frozen=True, slots=True)
class Hop:
    label: str
    sidecar: str  # whose admin port to read
    direction: str
    service: str


HOPS = (
    Hop("user sidecar inbound", "user", "inbound", "user"),
    Hop("trading sidecar inbound", "trading", "inbound", "trading"),
    Hop("trading sidecar outbound → portfolio", "trading", "outbound", "portfolio"),
    Hop("portfolio sidecar inbound", "portfolio", "inbound", "portfolio"),
)


@dataclass(slots=True)
class Scrape:
    """One sidecar's request metrics, keyed by (direction, service)."""

    buckets: dict[Series, dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    codes: dict[Series, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    handshakes: Counter[str] = field(default_factory=Counter)  # inbound TLS, by result
    rotations: int = 0  # certificate rotations since the sidecar started
    error: str | None = None  # why there is nothing to show


def parse(text: str) -> Scrape:
    scrape = Scrape()
    bucket_name = names.REQUEST_DURATION + "_bucket"
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("direction", ""), labels.get("service", ""))
            if sample.name == bucket_name:
                le = float(labels["le"])  # "+Inf" parses to inf
                scrape.buckets[key][le] = scrape.buckets[key].get(le, 0.0) + sample.value
            elif sample.name == names.REQUESTS_TOTAL:
                scrape.codes[key][labels.get("code", "?")] += int(sample.value)
            elif sample.name == names.TLS_HANDSHAKES:
                scrape.handshakes[labels.get("result", "?")] += int(sample.value)
            elif sample.name == names.CERTIFICATE_ROTATIONS:
                scrape.rotations += int(sample.value)
    return scrape


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Prometheus' `histogram_quantile` over cumulative buckets {le: count}; NaN if empty."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    bounds = sorted(buckets)
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return math.nan
    counts, highest = [], 0.0
    for le in bounds:  # scrapes are not atomic: force the cumulative counts monotonic
        highest = max(highest, buckets[le])
        counts.append(highest)
    observations = counts[-1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(bounds) - 1:  # in the +Inf bucket: the best answer is the last finite bound
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, count = 0.0, counts[b]
    if b > 0:
        start, count, rank = bounds[b - 1], count - counts[b - 1], rank - counts[b - 1]
    return start + (bounds[b] - start) * (rank / count)


def nearest_rank(q: float, ordered: list[float]) -> float:
    """The client's exact percentile: the smallest value with at least q of them at or below."""
    if not ordered:
        return math.nan
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.2f} ms"


def render(elapsed: float, stats: Mapping[str, EntryStats], skipped: int,
           scrapes: Mapping[str, Scrape], others: bool = False) -> str:
    """The report; `others` says clients besides the demo's (curl) may have used the mesh."""
    total = sum(s.requests for s in stats.values())
    errors = sum(s.errors for s in stats.values())
    rate = total / elapsed if elapsed > 0 else 0.0
    out = [f"summary: {elapsed:.1f} s, {total} requests, {errors} errors, {rate:.1f} req/s",
           "", "entry paths (measured by the client, into each service's sidecar inbound)",
           f"  {'entry':<32}{'service':<11}{'requests':>9}{'errors':>8}{'p50':>11}{'p99':>11}"]
    for entry in ENTRIES:
        s = stats[entry.label]
        ordered = sorted(s.latencies)
        out.append(f"  {entry.label:<32}{entry.service:<11}{s.requests:>9}{s.errors:>8}"
                   f"{ms(nearest_rank(0.5, ordered)):>11}{ms(nearest_rank(0.99, ordered)):>11}")
    out += ["", "hops (each sidecar's /internal/v1/metrics; p50/p99 as histogram_quantile)",
            f"  {'hop':<39}{'requests':>9}  {'codes':<18}{'p50':>11}{'p99':>11}"]
    for hop in HOPS:
        out.append("  " + _hop_row(hop, scrapes.get(hop.sidecar)))
    out += _identity(scrapes)
    out += _notes(stats, skipped, scrapes, others)
    return "\n".join(out)


def _hop_row(hop: Hop, scrape: Scrape | None) -> str:
    if scrape is None or scrape.error:
        why = scrape.error if scrape else "not scraped"
        return f"{hop.label:<39}  metrics unavailable: {why}"
    key = (hop.direction, hop.service)
    codes = scrape.codes.get(key, Counter())
    buckets = scrape.buckets.get(key, {})
    if not codes and not buckets:
        seen = sorted(set(scrape.codes) | set(scrape.buckets))
        return (f"{hop.label:<39}  no requests recorded with direction={hop.direction} "
                f"service={hop.service} (series seen: {_series(seen)})")
    code_text = " ".join(f"{c}:{n}" for c, n in sorted(codes.items())) or "-"
    return (f"{hop.label:<39}{sum(codes.values()):>9}  {code_text:<18}"
            f"{ms(histogram_quantile(0.5, buckets)):>11}{ms(histogram_quantile(0.99, buckets)):>11}")


def _identity(scrapes: Mapping[str, Scrape]) -> list[str]:
    rows = [(name, s) for name, s in scrapes.items() if not s.error and (s.handshakes or s.rotations)]
    if not rows:
        return []
    out = ["", "identity (mTLS handshakes at each sidecar's inbound; leaf rotations)"]
    for name, s in rows:
        failed = sum(n for r, n in s.handshakes.items() if r != "ok")
        out.append(f"  {name + ' sidecar':<39}{s.handshakes['ok']:>9} ok, {failed} failed, "
                   f"{s.rotations} rotations")
    return out


def _series(seen: Iterable[Series]) -> str:
    return ", ".join(f"{d}/{s}" for d, s in seen) or "none"


def _notes(stats: Mapping[str, EntryStats], skipped: int,
           scrapes: Mapping[str, Scrape], others: bool) -> list[str]:
    notes = []
    for label, s in stats.items():
        if s.error_kinds:
            kinds = ", ".join(f"{k}: {n}" for k, n in s.error_kinds.most_common())
            notes.append(f"errors on {label}: {kinds}")
    if skipped:
        notes.append(f"{skipped} requests were not sent: every client worker was waiting for "
                     "an answer (the mesh, or this machine, could not keep up with --rate)")
    if others:
        notes.append("hop counts include any requests you sent yourself (curl)")
    else:
        notes += _mismatches(stats, scrapes)
    return ["", *notes] if notes else []


def _mismatches(stats: Mapping[str, EntryStats], scrapes: Mapping[str, Scrape]) -> list[str]:
    """Cross-check: every request the client sent must show up in the sidecars' counters."""
    sent = {entry.service: stats[entry.label].requests for entry in ENTRIES}
    expected = {HOPS[0]: sent["user"], HOPS[1]: sent["trading"], HOPS[2]: sent["trading"],
                HOPS[3]: sent["portfolio"] + sent["trading"]}
    notes = []
    for hop, want in expected.items():
        scrape = scrapes.get(hop.sidecar)
        if scrape is None or scrape.error:
            continue
        got = sum(scrape.codes.get((hop.direction, hop.service), Counter()).values())
        if got != want:
            notes.append(f"note: {hop.label} counted {got} requests; the demo's client "
                         f"implies {want}")
    return notes
