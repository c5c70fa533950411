"""Assemble the report: one section per question, each with a sentence computed from the numbers."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.io as pio

from custseg._fork import can_fork
from custseg.errors import ConfigError, literal
from custseg.report import _figures as figs
from custseg.report._figures import fmt, pct
from custseg.report._run import RunFolder, read_run

#: t-SNE perplexity (scikit-learn's default); lowered for tiny samples.
_PERPLEXITY = 30.0
#: t-SNE iterations.  500 settles the layout of a few thousand customers; the default 1,000
#: doubles the time for no visible change.
_TSNE_ITERATIONS = 500
#: openTSNE's iterations with and without early exaggeration.  Its learning rate (n / 12)
#: settles the layout sooner: on 4,338 customers the KL divergence was 1.20 after 125 + 125
#: iterations (5.3 s) against 1.10 after 250 + 250 (8.9 s), the same picture.
_OPEN_TSNE_ITERATIONS = (125, 125)
#: openTSNE's neighbour search and Barnes-Hut angle.  Exact neighbours of at most a few
#: thousand customers cost less than building Annoy's approximate index, and theta 0.8 (0.5 is
#: openTSNE's default) cuts the gradient's cost by a third.  Measured on 4,338 customers × 5
#: features, one thread: neighbours 0.31 s exact vs 2.7 s Annoy; 250 iterations 5.2 s at theta
#: 0.8 vs 8.0 s at 0.5, KL divergence 1.18 vs 1.16 (1.20 with Annoy's neighbours and 0.5).
_OPEN_TSNE_NEIGHBORS = "exact"
_OPEN_TSNE_THETA = 0.8
#: Customers in the t-SNE map at most (a seeded sample of the scatter plots' customers).  Its
#: cost grows faster than the number of customers, and 2,000 dots show the same groups: on
#: Online Retail, one thread, 2.6 s of CPU at 2,000 customers against 7.9 s at all 4,338.
_TSNE_MAX_POINTS = 2_000
#: Features drawn as small histograms / bars at most.
_MAX_DISTRIBUTIONS = 40
#: Key numbers on a segment card.
_CARD_NUMBERS = 6

_UNITS: dict[str, str] = {
    "recency_days": "days", "tenure_days": "days", "avg_days_between_orders": "days", "recency": "days",
    "frequency": "orders", "monetary": "currency", "avg_order_value": "currency per order",
    "n_products": "products", "age": "years", "income": "currency per year", "kidhome": "children",
    "teenhome": "teenagers", "numwebvisitsmonth": "visits per month",
}


@dataclass(frozen=True)
class Chart:
    id: str
    json: str
    alt: str
    caption: str = ""
    height: int = 400


@dataclass(frozen=True)
class Table:
    caption: str
    columns: list[tuple[str, bool]]  # (label, numeric → right-aligned)
    rows: list[list[str]]
    highlight: frozenset[int] = frozenset()
    nowrap: bool = False


@dataclass(frozen=True)
class Card:
    segment: int
    name: str
    color: str
    facts: list[str]
    description: str
    rule: str
    precision: str
    recall: str
    numbers: list[tuple[str, str, str]]  # (feature (unit), segment median, all customers median)
    distinguishing: str
    badge: str = ""
    outcomes: list[str] = field(default_factory=list)  # "Churn: 63% of customers (95 % interval …), ×2.17"


@dataclass
class Section:
    id: str
    title: str
    lead: str
    charts: list[Chart] = field(default_factory=list)
    grid: list[Chart] = field(default_factory=list)
    grid_caption: str = ""
    tables: list[Table] = field(default_factory=list)
    lists: list[tuple[str, list[str]]] = field(default_factory=list)
    cards: list[Card] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""


def unit_of(column: str) -> str | None:
    """Unit of a feature for axis labels, from its canonical or usual name."""
    name = column.lower()
    if name in _UNITS:
        return _UNITS[name]
    if name.endswith("_days") or name.endswith("days"):
        return "days"
    if name.startswith("mnt") or any(w in name for w in ("spend", "amount", "revenue", "sales", "price", "income")):
        return "currency"
    if name.startswith("num") and name.endswith("purchases"):
        return "purchases"
    if name.startswith("accepted") or name in ("response", "complain"):
        return "1 = yes, 0 = no"
    return None


def axis_title(column: str) -> str:
    unit = unit_of(column)
    return f"{column} ({unit})" if unit else column


def _with_unit(value: float, column: str) -> str:
    unit = unit_of(column)
    if unit in ("days", "orders", "products", "purchases", "years"):
        return f"{fmt(value)} {unit if value != 1 else unit.rstrip('s')}"
    return fmt(value)


class _Charts:
    """Turns figures into :class:`Chart` records with unique ids."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def __call__(self, name: str, figure, *, alt: str, caption: str = "") -> Chart:
        base, n = f"fig-{name}", 2
        chart_id = base
        while chart_id in self.ids:
            chart_id, n = f"{base}-{n}", n + 1
        self.ids.add(chart_id)
        height = int(figure.layout.height or 400)
        return Chart(chart_id, pio.to_json(figure, remove_uids=True), alt, caption, height)


# --- the context ---------------------------------------------------------------------------

@dataclass
class _Run:
    """What every section needs, computed once."""

    folder: RunFolder
    segments: list[int]
    names: dict[int, str]
    colors: dict[int, str]
    value_term: str | None
    algorithm_label: str
    labels_by_algorithm: dict[str, str]

    @property
    def summary(self) -> dict[str, Any]:
        return self.folder.summary


def _algorithm_labels() -> dict[str, str]:
    from custseg.cluster import ALGORITHMS

    return {name: spec.label for name, spec in ALGORITHMS.items()}


def _prepare(folder: RunFolder) -> _Run:
    profiles = folder.profiles
    segments = [int(s) for s in profiles["segment"]]
    names = {int(s): str(n) for s, n in zip(profiles["segment"], profiles["name"])}
    for s in set(folder.labels.tolist()) - set(names):
        names[int(s)] = "Unassigned" if s == -1 else f"segment {s}"
        segments.append(int(s))
    value_column = folder.summary.get("value_column")
    value_term = None if not value_column else "revenue" if value_column == "monetary" else "spend"
    labels = _algorithm_labels()
    algorithm = str(folder.summary.get("algorithm"))
    return _Run(folder, segments, names, figs.segment_colors(segments), value_term,
                labels.get(algorithm, algorithm), labels)


def source_name(summary: dict[str, Any], *, full: bool = False) -> str:
    """The source's file name (``full``: its path), or its URL without credentials."""
    source = str(summary.get("cleaning", {}).get("source") or summary.get("run", {}).get("source") or "the source")
    if "://" in source:
        return re.sub(r"//[^/@\s]*@", "//", source)
    return source if full else Path(source).name


def _who(name: str) -> str:
    """'Champions are' reads well; a descriptive name reads better as 'segment “…”'."""
    from custseg import rfm

    plural = any(name == s or name.startswith(s + " ") for s in rfm.SEGMENTS)
    return name if plural else f"segment “{name}”"


def _share_sentence(run: _Run, segment: int) -> str:
    row = run.folder.profiles.set_index("segment").loc[segment]
    name = run.names[segment]
    plural = _who(name) == name
    text = f"{_who(name)} {'are' if plural else 'is'} {pct(row['share'])} of customers"
    if run.value_term and pd.notna(row["value_share"]):
        text += f" and {'bring' if plural else 'brings'} {pct(row['value_share'])} of {run.value_term}"
    return text


# --- sections ------------------------------------------------------------------------------

def _overview(run: _Run, chart: _Charts) -> Section:
    summary = run.summary
    source = source_name(summary)
    kind = "a transaction log" if summary.get("kind") == "transactions" else "a customer table"
    as_of = str(summary.get("as_of", ""))[:10]
    customers = run.folder.customers
    k = int(summary.get("n_clusters") or len([s for s in run.segments if s != -1]))
    lead = (f"{customers:,} customers from {source} ({kind}, as of {as_of}) fall into {k} segments "
            f"found by {run.algorithm_label}.")
    best = summary.get("best_segment")
    if best is not None and int(best) in run.names:
        sentence = _share_sentence(run, int(best))
        lead += f" {sentence[0].upper()}{sentence[1:]}."
    noise = int((run.folder.labels == -1).sum())
    if noise:
        share = noise / len(run.folder.labels)
        about = "About " if run.folder.sampled else ""
        lead += f" {about}{round(share * customers):,} customers ({pct(share)}) fit no segment ({run.names[-1]})."
    lead += _sample_note(run)
    section = Section("overview", "Overview", lead)
    profiles = run.folder.profiles
    alt = "Bar chart of the share of customers" + (f" and of {run.value_term}" if run.value_term else "") + " in each segment"
    section.charts.append(chart(
        "size-value", figs.size_and_value(profiles, run.colors, value_term=run.value_term), alt=alt,
        caption="Blue bars: share of all customers in the segment" + (
            f"; orange hatched bars: the segment's share of total {run.value_term}." if run.value_term else "."),
    ))
    return section


def _data(run: _Run, chart: _Charts) -> Section:
    cleaning = run.folder.cleaning
    info = run.summary.get("cleaning", {})
    source = source_name(run.summary)
    rules = cleaning[cleaning["rule"] != "kept"]
    rows_in = int(info.get("rows_in") or (cleaning["rows"].sum()))
    rows_out = int(info.get("rows_out") or cleaning.loc[cleaning["rule"] == "kept", "rows"].sum())
    dropped = rules[rules["rows"] > 0].sort_values("rows", ascending=False)
    if dropped.empty:
        lead = f"All {rows_in:,} rows of {source} were kept: no cleaning rule dropped a row."
    else:
        top = dropped.iloc[0]
        lead = (f"Of {rows_in:,} rows read from {source}, {rows_out:,} ({pct(rows_out / rows_in if rows_in else float('nan'))}) "
                f"were kept; the biggest drop was {top['rule']}: {int(top['rows']):,} rows "
                f"({pct(top['rows'] / rows_in if rows_in else float('nan'))}), {top['description']}.")
    section = Section("data", "Data and cleaning", lead)
    if not dropped.empty:
        section.charts.append(chart("cleaning", figs.cleaning_bars(cleaning),
                                    alt="Bar chart of rows dropped by each cleaning rule and rows kept",
                                    caption="Each row of the source is dropped by the first rule that applies; "
                                            "green is what the features were computed from."))
    section.tables.append(Table(
        "Rows per cleaning rule",
        [("rule", False), ("rows", True), ("share of rows", True), ("meaning", False)],
        [[str(r.rule), f"{int(r.rows):,}", pct(r.rows / rows_in if rows_in else float("nan")), str(r.description)]
         for r in cleaning.itertuples(index=False)],
        frozenset(i for i, r in enumerate(cleaning["rule"]) if r == "kept"),
    ))
    notes = [str(n) for n in info.get("notes", [])]
    if notes:
        section.lists.append(("Cleaning notes", notes))
    prep = [str(p) for p in run.summary.get("preprocessing", [])]
    columns = run.summary.get("feature_columns", [])
    if prep or columns:
        section.lists.append((
            f"How the {len(columns)} clustering features were prepared",
            ([f"Features: {', '.join(columns)}."] if columns else []) + prep,
        ))
    return section


def _sample_note(run: _Run) -> str:
    """What a reader of a run read as a sample (:attr:`custseg.runs.RunFolder.sampled`) is told."""
    if not run.folder.sampled:
        return ""
    return (f" Segment sizes, shares and profiles count all {run.folder.customers:,} customers; the charts and "
            f"tables of single customers (distributions, maps, RFM) are drawn from a seeded sample of "
            f"{len(run.folder.features):,} of them.")


def _feature_columns(run: _Run) -> tuple[list[str], list[str]]:
    """Numeric and categorical columns of the feature table, clustering features first."""
    features = run.folder.features
    first = [c for c in run.summary.get("feature_columns", []) if c in features.columns]
    ordered = first + [c for c in features.columns if c not in first]
    numeric, categorical = [], []
    for column in ordered:
        if column == "customer_id":
            continue
        series = features[column]
        if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
            if series.notna().any():
                numeric.append(column)
        elif pd.api.types.is_datetime64_any_dtype(series) or isinstance(series.dtype, pd.DatetimeTZDtype):
            continue
        elif 1 < series.nunique(dropna=True) <= 200:
            categorical.append(column)
    return numeric, categorical


def _distributions(run: _Run, chart: _Charts) -> Section:
    features, labels = run.folder.features, run.folder.labels
    numeric, categorical = _feature_columns(run)
    used = set(run.summary.get("feature_columns", []))
    grid, logged, skews = [], [], []
    for column in numeric[:_MAX_DISTRIBUTIONS]:
        values = features[column].astype("float64").to_numpy()
        missing = int(np.isnan(values).sum())
        notes = (["clustering feature"] if column in used else []) + ([f"{missing:,} without a value"] if missing else [])
        fig, log = figs.feature_histogram(
            values, labels, segments=run.segments, names=run.names, colors=run.colors,
            title=column, axis_title=axis_title(column), notes=notes,
        )
        grid.append(chart(f"dist-{_slug(column)}", fig, alt=f"Histogram of {column} stacked by segment"
                          + (", log scale" if log else "")))
        if log:
            finite = values[np.isfinite(values)]
            logged.append(column)
            median, mean = float(np.median(finite)), float(finite.mean())
            skews.append((mean / median if median > 0 else math.inf, column, median, mean))
    for column in categorical[: max(0, _MAX_DISTRIBUTIONS - len(grid))]:
        fig = figs.category_bars(features[column], labels, segments=run.segments, names=run.names, colors=run.colors,
                                 title=column, notes=["clustering feature"] if column in used else [])
        grid.append(chart(f"dist-{_slug(column)}", fig, alt=f"Bar chart of customers per {column} stacked by segment"))
    if skews:
        ratio, column, median, mean = max(skews)
        lead = (f"{column} has the longest tail: the median customer has {_with_unit(median, column)} but the mean is "
                f"{_with_unit(mean, column)}" + (f" ({ratio:.1f}×)" if math.isfinite(ratio) else "")
                + f", pulled up by a few large customers; {len(logged)} skewed feature{'s are' if len(logged) > 1 else ' is'} "
                "drawn on a log scale.")
    else:
        lead = "No feature has a long right tail, so every axis is linear; the colours show where each segment sits."
    section = Section("distributions", "Feature distributions", lead, grid=grid)
    shown = len(numeric[:_MAX_DISTRIBUTIONS]) + len(categorical[: max(0, _MAX_DISTRIBUTIONS - len(grid))])
    section.grid_caption = (
        f"Customers per value of each feature, stacked by segment (all {len(features):,} customers). "
        "Log-scale axes space 0, 1, 10, 100, … evenly (log(1 + x)). "
        + ("" if shown >= len(numeric) + len(categorical) else f"The first {shown} features are shown.")
    ).strip()
    section.legend = [(run.names[s], run.colors[s]) for s in run.segments]
    return section


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "x"


def _correlations(run: _Run, chart: _Charts) -> Section | None:
    numeric, _ = _feature_columns(run)
    frame = run.folder.features[numeric].astype("float64")
    frame = frame.loc[:, frame.nunique() > 1]
    if frame.shape[1] < 2:
        return None
    corr = frame.corr(method="spearman")
    upper = corr.where(np.triu(np.ones(corr.shape, dtype=bool), k=1)).stack()
    upper = upper[np.isfinite(upper)]
    if upper.empty:
        return None
    (a, b), high = upper.idxmax(), upper.max()
    (c, d), low = upper.idxmin(), upper.min()
    if max(abs(high), abs(low)) < 0.3:
        lead = "No two features are strongly related (every |ρ| < 0.3): each carries its own information."
    else:
        lead = f"{a} and {b} rise together most (ρ = {high:.2f})"
        lead += ": they carry overlapping information" if high >= 0.7 else ""
        lead += f"; {c} and {d} are the most opposed (ρ = {low:.2f})." if low <= -0.3 else "; no pair is strongly opposed."
    section = Section("correlations", "Correlations", lead)
    section.charts.append(chart(
        "correlations", figs.correlation_heatmap(corr),
        alt=f"Heatmap of Spearman rank correlations between {corr.shape[0]} features",
        caption="Spearman rank correlation on all customers: 1 = always rise together, −1 = one rises as the other falls, "
                "0 = unrelated. Red is positive, blue negative.",
    ))
    return section


def _rfm(run: _Run, chart: _Charts) -> Section | None:
    scored = run.folder.rfm
    if scored is None or scored.empty:
        return None
    from custseg import rfm

    total = float(scored["monetary"].sum())
    grouped = scored.groupby("rfm_segment", sort=False)
    summary = pd.DataFrame({
        "customers": grouped.size(),
        "revenue": grouped["monetary"].sum(),
        "recency": grouped["recency_days"].median() if "recency_days" in scored else np.nan,
        "frequency": grouped["frequency"].median() if "frequency" in scored else np.nan,
        "monetary": grouped["monetary"].median(),
    }).reset_index()
    summary["share"] = summary["customers"] / len(scored)
    summary["revenue_share"] = summary["revenue"] / total if total else np.nan
    order = {name: i for i, name in enumerate(rfm.SEGMENTS)}
    summary = summary.sort_values("rfm_segment", key=lambda s: s.map(lambda v: order.get(v, len(order)))).reset_index(drop=True)
    top = summary.loc[summary["revenue_share"].idxmax()]
    largest = summary.loc[summary["customers"].idxmax()]
    lead = (f"{top['rfm_segment']} are {pct(top['share'])} of customers and bring {pct(top['revenue_share'])} of revenue")
    if largest["rfm_segment"] != top["rfm_segment"]:
        lead += (f"; the largest group, {largest['rfm_segment']} ({pct(largest['share'])} of customers), "
                 f"brings {pct(largest['revenue_share'])}")
    lead += "."
    section = Section("rfm", "RFM segments", lead)
    section.charts.append(chart(
        "rfm-treemap", figs.rfm_treemap(summary),
        alt="Treemap of RFM segments sized by customers and coloured by share of revenue",
        caption="RFM scores rank every customer 1–5 on recency, frequency and monetary value (5 = best); "
                "the named segments come from the recency and frequency scores.",
    ))
    ids = run.folder.features["customer_id"].to_numpy()
    by_id = scored.set_index(scored["customer_id"].astype("string"))["rfm_segment"]
    if by_id.index.is_unique:
        rfm_of = by_id.reindex(ids).to_numpy()
        present = [s for s in summary["rfm_segment"]]
        mix = pd.crosstab(pd.Series([run.names[int(s)] for s in run.folder.labels], name="segment"),
                          pd.Series(rfm_of, name="rfm_segment"), normalize="index")
        mix = mix.reindex(index=[run.names[s] for s in run.segments], columns=present).fillna(0.0)
        section.charts.append(chart(
            "rfm-mix", figs.rfm_crosstab(mix),
            alt="Heatmap of the share of each segment's customers in each RFM segment",
            caption="Read across a row: which RFM segments the customers of that segment belong to.",
        ))
    sampled = f" (a seeded sample of {len(scored):,} of {run.folder.customers:,} customers)" if run.folder.sampled else ""
    section.tables.append(Table(
        f"RFM segments, best first{sampled}",
        [("RFM segment", False), ("customers", True), ("share", True), ("share of revenue", True),
         ("median recency (days)", True), ("median orders", True), ("median spend (currency)", True)],
        [[str(r.rfm_segment), f"{int(r.customers):,}", pct(r.share), pct(r.revenue_share), fmt(r.recency),
          fmt(r.frequency), fmt(r.monetary)] for r in summary.itertuples(index=False)],
    ))
    return section


def _cohorts(run: _Run, chart: _Charts) -> Section | None:
    matrix = run.folder.cohorts
    if matrix is None or matrix.empty:
        return None
    months = [c for c in matrix.columns if c.startswith("month_")]
    later = [c for c in months if c != "month_0"]
    if not later:
        return None
    keys = [c for c in matrix.columns if c not in months and c != "customers"]
    row_labels = [" · ".join(str(getattr(r, k)) for k in keys) + f" · {int(r.customers):,}"
                  for r in matrix.itertuples(index=False)]
    sizes = matrix["customers"].astype("float64")

    def weighted(column: str) -> float:
        values = matrix[column].astype("float64")
        known = values.notna()
        return float((values[known] * sizes[known]).sum() / sizes[known].sum()) if known.any() else float("nan")

    lead = f"On average {pct(weighted('month_1'))} of a cohort's customers order again in the month after their first order"
    if "month_3" in matrix:
        lead += f" and {pct(weighted('month_3'))} three months later"
    big = matrix[(sizes >= sizes.median() / 2) & matrix["month_1"].notna()]
    if len(big) > 1:
        best = big.loc[big["month_1"].astype("float64").idxmax()]
        lead += (f"; the {' · '.join(str(best[k]) for k in keys)} cohort ({int(best['customers']):,} customers) "
                 f"came back most: {pct(best['month_1'])} after one month")
    lead += " (cohort averages weighted by size)."
    section = Section("cohorts", "Cohort retention", lead)
    section.charts.append(chart(
        "cohorts", figs.cohort_heatmap(matrix[later], row_labels),
        alt="Heatmap of the share of each monthly acquisition cohort that ordered again in each later month",
        caption="Rows: customers grouped by the month of their first order (with their number). Columns: months "
                "after it (month 0, always 100%, is left out). Empty cells are after the data ends.",
    ))
    return section


def _elbow_measure(board: pd.DataFrame) -> str:
    """What the elbow curve plots: K-Means inertia, or the K-Prototypes cost when K-Prototypes
    was swept on its own mixed table (custseg.selection.compare_mixed)."""
    if not board.empty and set(board["algorithm"]) == {"kprototypes"}:
        return "the K-Prototypes cost"
    return "K-Means inertia"


def _chosen(run: _Run) -> tuple[str, int] | None:
    algorithm, k = run.summary.get("algorithm"), run.summary.get("n_clusters")
    return (str(algorithm), int(k)) if algorithm and k else None


def _selection(run: _Run, chart: _Charts) -> Section:
    elbow, board = run.folder.elbow, run.folder.leaderboard
    if board.empty and len(elbow) < 2:  # rules (RFM) fix the segments: nothing was swept
        return Section("selection", "Choosing the number of segments",
                       f"No number of segments was chosen: the {run.algorithm_label} come from rules, so "
                       "there is no elbow and no fit to compare.")
    knee = run.summary.get("knee")
    knee = int(knee) if knee is not None else None
    chosen = _chosen(run)
    lead = (f"Inertia falls steeply up to k = {knee}, the knee of the elbow, and slowly after it."
            if knee is not None else "The elbow curve has no clear knee.")
    row = None
    if chosen is not None:
        match = board[(board["algorithm"] == chosen[0]) & (board["n_clusters"] == chosen[1])]
        row = match.iloc[0] if len(match) else None
    if row is not None:
        s = float(row["silhouette"])
        quality = ("a strong structure" if s >= 0.5 else "a real structure" if s >= 0.25
                   else "weak structure: segments overlap")
        lead += (f" The chosen {run.algorithm_label} with {chosen[1]} segments scores silhouette {s:.2f} ({quality}), "
                 f"Davies–Bouldin {float(row['davies_bouldin']):.2f} and Calinski–Harabasz "
                 f"{fmt(float(row['calinski_harabasz']))}.")
    elif chosen is not None:
        lead += f" The final {run.algorithm_label} fit is not one of the compared rows."
    section = Section("selection", "Choosing the number of segments", lead)
    if len(elbow) >= 2:
        section.charts.append(chart(
            "elbow", figs.elbow_curve(elbow, knee=knee, chosen=chosen[1] if chosen else None),
            alt=(f"Line chart of {_elbow_measure(board)} against the number of segments with the knee marked"),
            caption="Inertia always falls as k grows; the knee is where adding a segment stops paying off.",
        ))
    if not board.empty:
        for metric in ("silhouette", "davies_bouldin", "calinski_harabasz"):
            if board[metric].notna().any():
                section.grid.append(chart(
                    metric.replace("_", "-"), figs.metric_curve(board, metric, labels=run.labels_by_algorithm, chosen=chosen),
                    alt=f"Line chart of the {metric.replace('_', ' ')} index against the number of segments per algorithm",
                ))
        section.grid_caption = ("Silhouette: how much closer customers are to their own segment than to the next "
                                "(−1 to 1, higher is better). Davies–Bouldin: average similarity of each segment to "
                                "its closest one (lower is better). Calinski–Harabasz: spread between segments over "
                                "spread within them (higher is better). The star is the fit used.")
    return section


def _leaderboard(run: _Run) -> Section:
    recommendation = run.summary.get("recommendation", {}) or {}
    text = str(recommendation.get("text") or "no recommendation recorded")
    section = Section("leaderboard", "Leaderboard and recommendation", f"Recommendation: {text.rstrip('.')}.")
    reasons = [str(r) for r in recommendation.get("reasons", [])]
    if reasons:
        section.lists.append(("Why", reasons))
    chosen = _chosen(run)
    if chosen and (recommendation.get("algorithm"), recommendation.get("n_clusters")) != chosen:
        section.note = f"Used: {run.algorithm_label} with {chosen[1]} segments, as asked."
    board = run.folder.leaderboard
    if board.empty:
        return section
    spec = [
        ("algorithm", "algorithm", False, lambda v: run.labels_by_algorithm.get(str(v), str(v))),
        ("n_clusters", "k", True, lambda v: fmt(v)),
        ("silhouette", "silhouette ↑", True, lambda v: f"{v:.3f}" if pd.notna(v) else "—"),
        ("davies_bouldin", "Davies–Bouldin ↓", True, lambda v: f"{v:.2f}" if pd.notna(v) else "—"),
        ("calinski_harabasz", "Calinski–Harabasz ↑", True, lambda v: f"{v:,.0f}" if pd.notna(v) else "—"),
        ("inertia", "inertia", True, lambda v: f"{v:,.0f}" if pd.notna(v) else "—"),
        ("bic", "BIC ↓", True, lambda v: f"{v:,.0f}" if pd.notna(v) else "—"),
        ("stability", "stability (ARI) ↑", True, lambda v: f"{v:.2f}" if pd.notna(v) else "—"),
        ("min_share", "smallest segment", True, lambda v: pct(v) if pd.notna(v) else "—"),
        ("noise_share", "noise", True, lambda v: pct(v) if pd.notna(v) else "—"),
        ("fit_seconds", "fit (s)", True, lambda v: f"{v:.2f}" if pd.notna(v) else "—"),
    ]
    spec = [s for s in spec if s[0] in board.columns and (s[0] in ("algorithm", "n_clusters") or board[s[0]].notna().any())]
    if "noise_share" in board and not (board["noise_share"].fillna(0) > 0).any():
        spec = [s for s in spec if s[0] != "noise_share"]
    rows = [[f(r[c]) for c, _, _, f in spec] for _, r in board.iterrows()]
    highlight = frozenset(
        i for i, (_, r) in enumerate(board.iterrows())
        if chosen and r["algorithm"] == chosen[0] and int(r["n_clusters"]) == chosen[1]
    )
    unmeasured = ""
    if "stability" in board and board["stability"].notna().any() and board["stability"].isna().any():
        unmeasured = "; stability — : not measured (a segment too small, or a row that could not be recommended)"
    section.tables.append(Table(
        f"Every fit compared ({len(board)} rows; the highlighted row is the one used; ↑ higher is better, "
        f"↓ lower is better{unmeasured})",
        [(label, numeric) for _, label, numeric, _ in spec], rows, highlight, nowrap=True,
    ))
    return section


#: What applying a saved preprocessor to a feature table it does not fit raises: ``KeyError``
#: for a feature column the table lacks, ``ValueError`` from scikit-learn (columns missing from
#: the fitted ColumnTransformer, text where it converts numbers, no rows, not fitted) and from
#: custseg's own checks (DataError, SchemaError, ModelError are ValueErrors).
_DOES_NOT_FIT = (KeyError, ValueError)


def _matrix(run: _Run) -> pd.DataFrame:
    model = run.folder.model
    return _numbers(model.preprocessor.transform(run.folder.features[model.feature_columns]))


def _numbers(transformed: Any) -> pd.DataFrame:
    """The numeric columns of a clustering matrix as float64, their names as text."""
    frame = transformed if isinstance(transformed, pd.DataFrame) else pd.DataFrame(np.asarray(transformed))
    frame = frame.select_dtypes("number").astype("float64")
    frame.columns = [str(c) for c in frame.columns]
    return frame


@dataclass(frozen=True)
class _MapPoints:
    """The customers the maps draw: the clustering matrix's finite rows ``X``, the seeded sample
    of the scatter plots (``sample``) and the t-SNE map's sample of that one (``within``)."""

    matrix: pd.DataFrame
    X: np.ndarray
    finite: np.ndarray
    sample: np.ndarray
    within: np.ndarray

    @property
    def tsne_input(self) -> np.ndarray:
        return self.X[self.sample[self.within]]


def _map_points(run: _Run, *, max_points: int, random_state: int) -> _MapPoints | str:
    """The points of the maps, or why no map is drawn."""
    try:
        matrix = _matrix(run)
    except _DOES_NOT_FIT as exc:  # the saved preprocessor does not fit this table; anything else is a bug
        return f"The saved model could not transform the feature table ({type(exc).__name__}), so no maps are drawn."
    return _points_of(matrix, max_points=max_points, random_state=random_state)


def _points_of(matrix: pd.DataFrame, *, max_points: int, random_state: int) -> _MapPoints | str:
    finite = np.isfinite(matrix.to_numpy()).all(axis=1)
    X = matrix.to_numpy()[finite]
    if X.shape[0] < 3 or X.shape[1] < 2:
        return "Too few customers or clustering columns to draw a map."
    n = X.shape[0]
    rng = np.random.default_rng(random_state)
    sample = np.sort(rng.choice(n, size=max_points, replace=False)) if n > max_points else np.arange(n)
    m = len(sample)
    within = np.arange(m)
    if m > _TSNE_MAX_POINTS:
        within = np.sort(rng.choice(m, size=_TSNE_MAX_POINTS, replace=False))
    return _MapPoints(matrix, X, finite, sample, within)


def _maps(run: _Run, chart: _Charts, points: _MapPoints | str, tsne: Callable[[], np.ndarray | None], *,
          max_points: int, random_state: int) -> Section:
    """The PCA and t-SNE maps of ``points``; ``tsne()`` gives the t-SNE layout of its sample."""
    from sklearn.decomposition import PCA

    if isinstance(points, str):
        return Section("maps", "Maps of customers", points)
    features, labels = run.folder.features, run.folder.labels
    matrix, X, finite, sample, within = points.matrix, points.X, points.finite, points.sample, points.within
    ids_all = features["customer_id"].astype("string").to_numpy()[finite]
    labels_all = labels[finite]
    n, m = X.shape[0], len(sample)
    drawn = (f"A random sample of {m:,} of the {n:,} customers is drawn (seed {random_state}, at most {max_points:,} points)"
             if m < n else f"All {n:,} customers are drawn")

    components = min(3, X.shape[1])
    pca = PCA(n_components=components, random_state=random_state).fit(X)
    projected = pca.transform(X)
    ratio = pca.explained_variance_ratio_
    titles = [f"PC{i + 1} ({pct(r, 0)} of variance)" for i, r in enumerate(ratio)]
    loadings = pd.Series(pca.components_[0], index=matrix.columns)
    top = loadings.abs().sort_values(ascending=False).index[:2]
    signs = ["rises" if loadings[c] > 0 else "falls" for c in top]
    drivers = (f"{signs[0]} with {' and '.join(top)}" if len(set(signs)) == 1
               else " and ".join(f"{sign} with {c}" for sign, c in zip(signs, top)))
    lead = (f"The first two principal components keep {pct(ratio[:2].sum())} of the variation in the "
            f"{X.shape[1]} columns of the clustering matrix")
    centres = pd.Series(projected[:, 0]).groupby(labels_all).mean().drop(index=-1, errors="ignore")
    if len(centres) >= 2:
        low, high = run.names[int(centres.idxmin())], run.names[int(centres.idxmax())]
        lead += f"; {low} and {high} lie at opposite ends of PC1, which {drivers}."
    else:
        lead += "."
    section = Section("maps", "Maps of customers", lead)
    pts, lab, ids = projected[sample], labels_all[sample], ids_all[sample]
    section.charts.append(chart(
        "pca-2d", figs.scatter_2d(pts[:, :2], lab, ids, segments=run.segments, names=run.names, colors=run.colors,
                                  title="Customers on the first two principal components", x_title=titles[0],
                                  y_title=titles[1]),
        alt="Scatter plot of customers on the first two principal components, coloured by segment",
        caption=f"{drawn}; each dot is a customer. The components were computed on all customers from the "
                f"clustering matrix (standardized features); PC1 {drivers}.",
    ))

    tsne_points = tsne()
    if tsne_points is not None:
        perplexity = min(_PERPLEXITY, (within.size - 1) / 3)
        tsne_drawn = drawn if within.size == m else (
            f"A random sample of {within.size:,} of the {n:,} customers is drawn (seed {random_state}, at most "
            f"{_TSNE_MAX_POINTS:,} points in this map)")
        section.charts.append(chart(
            "tsne", figs.scatter_2d(tsne_points, lab[within], ids[within], segments=run.segments, names=run.names,
                                    colors=run.colors, title="t-SNE map of customers", x_title="t-SNE 1 (no unit)",
                                    y_title="t-SNE 2 (no unit)"),
            alt="t-SNE scatter plot of customers coloured by segment",
            caption=f"{tsne_drawn}. t-SNE (perplexity {perplexity:.0f}) keeps customers who are alike close together; "
                    "distances between groups and the size of a group mean little.",
        ))
    if components >= 3:
        section.charts.append(chart(
            "pca-3d", figs.scatter_3d(pts, lab, ids, segments=run.segments, names=run.names, colors=run.colors,
                                      title="Customers on the first three principal components",
                                      axis_titles=[f"PC{i + 1}" for i in range(3)]),
            alt="Three-dimensional scatter plot of customers on the first three principal components, coloured by segment",
            caption=f"{drawn}. PC1, PC2 and PC3 keep {', '.join(pct(r, 0) for r in ratio)} of the variation "
                    f"({pct(ratio.sum())} together). "
                    "Drag to turn, scroll to zoom.",
        ))
    return section


def _tsne(X: np.ndarray, *, random_state: int) -> np.ndarray | None:
    """Two-dimensional t-SNE of ``X`` (None for fewer than 10 rows).

    openTSNE when it is installed (``_OPEN_TSNE_ITERATIONS``), else scikit-learn's
    (``_TSNE_ITERATIONS``).  One thread either way: on a busy 2-core machine the threads of
    scikit-learn's Barnes-Hut step spin-wait on each other, and 4,338 customers took 28 s of
    CPU with two threads against 10 s with one; openTSNE took 5.3 s.
    """
    if len(X) < 10:
        return None
    from threadpoolctl import threadpool_limits

    perplexity = min(_PERPLEXITY, (len(X) - 1) / 3)
    with threadpool_limits(limits=1):
        try:
            from openTSNE import TSNE as OpenTSNE
        except ImportError:
            from sklearn.manifold import TSNE

            return TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                        max_iter=_TSNE_ITERATIONS, random_state=random_state).fit_transform(X)
        embedding = OpenTSNE(
            n_components=2, perplexity=perplexity, initialization="pca", n_jobs=1, random_state=random_state,
            negative_gradient_method="bh", theta=_OPEN_TSNE_THETA, neighbors=_OPEN_TSNE_NEIGHBORS,
            early_exaggeration_iter=_OPEN_TSNE_ITERATIONS[0], n_iter=_OPEN_TSNE_ITERATIONS[1], verbose=False,
        ).fit(X)
        return np.asarray(embedding)


def _outcomes(run: _Run) -> list[str]:
    """The run's outcome columns that profiles.csv has rates for."""
    return [o for o in run.summary.get("outcomes") or [] if f"{o}_rate" in run.folder.profiles.columns]


def _ordered_lifts(run: _Run) -> pd.DataFrame:
    """Segment × feature lifts, clustering features first, then each outcome's rate lift."""
    lifts = run.folder.lifts
    first = [c for c in run.summary.get("feature_columns", []) if c in lifts.columns]
    lifts = lifts[first + [c for c in lifts.columns if c not in first]].copy()
    by_segment = run.folder.profiles.set_index("segment")
    for outcome in _outcomes(run):
        lifts[f"{outcome} rate"] = by_segment[f"{outcome}_lift"].reindex(lifts.index).astype("float64")
    lifts = lifts.loc[:, lifts.notna().any()]
    return lifts.reindex([s for s in run.segments if s in lifts.index])


def _profiles(run: _Run, chart: _Charts) -> Section | None:
    lifts = _ordered_lifts(run)
    if lifts.empty:
        return None
    with np.errstate(divide="ignore"):
        strength = np.abs(np.log2(lifts.astype("float64").clip(lower=1e-3)))
    picks: list[tuple[float, int, str]] = []
    for segment in lifts.index:
        row = strength.loc[segment].dropna()
        if not row.empty:
            picks.append((float(row.max()), int(segment), str(row.idxmax())))
    picks.sort(reverse=True)
    parts = [f"{run.names[s]} has {float(lifts.loc[s, f]):.2f}× the average {f}" for _, s, f in picks[:2] if s != -1]
    lead = ("The sharpest contrasts: " + "; ".join(parts) + ". Red cells are above the average customer, "
            "blue below." if parts else "No segment differs much from the average customer.")
    section = Section("profiles", "Segment profiles", lead)
    section.charts.append(chart(
        "lifts", figs.lift_heatmap(lifts, [run.names[int(s)] for s in lifts.index]),
        alt="Heatmap of each segment's mean of each feature divided by the mean of all customers",
        caption="Lift = segment mean ÷ mean of all customers; ×1 is average, ×2 twice the average, ×½ half. "
                "The colour scale is logarithmic and stops at ×4 and ×¼."
                + (" Columns ending in 'rate' are outcomes (a result, not a feature): the segment's rate ÷ the "
                   "rate of all customers." if _outcomes(run) else ""),
    ))
    return section


def _segments(run: _Run) -> Section:
    profiles = run.folder.profiles
    features, labels = run.folder.features, run.folder.labels
    numeric, _ = _feature_columns(run)
    outcomes = _outcomes(run)
    numeric = [c for c in numeric if c not in outcomes]
    key: list[str] = [c for c in ("recency_days", "frequency", "monetary", "tenure_days") if c in numeric]
    cards = []
    best, worst = run.summary.get("best_segment"), run.summary.get("worst_segment")
    for position, row in enumerate(profiles.itertuples(index=False)):
        segment = int(row.segment)
        distinguishing = [part.split(" ×")[0].strip() for part in str(row.distinguishing or "").split(",") if part.strip()]
        chosen = list(dict.fromkeys(key + [c for c in distinguishing if c in numeric]))[:_CARD_NUMBERS]
        if len(chosen) < _CARD_NUMBERS:
            chosen += [c for c in numeric if c not in chosen][: _CARD_NUMBERS - len(chosen)]
        member = labels == segment
        numbers = [_key_number(features[column], member, column) for column in chosen]
        facts = [f"{int(row.customers):,} customers ({pct(row.share)})"]
        if run.value_term and pd.notna(row.value_share):
            facts.append(f"{pct(row.value_share)} of {run.value_term}")
            facts.append(f"{fmt(row.mean_value)} {run.value_term} per customer (mean)")
        badge = "best" if best is not None and segment == int(best) else "worst" if worst is not None and segment == int(worst) and best != worst else ""
        cards.append(Card(
            segment, run.names[segment], run.colors[segment], facts, str(row.description), str(row.rule),
            pct(row.rule_precision, 0), pct(row.rule_recall, 0), numbers, str(row.distinguishing or ""), badge,
            [_outcome_fact(run, outcome, profiles.iloc[position]) for outcome in outcomes],
        ))
    counted = profiles[profiles["segment"] != -1] if (profiles["segment"] != -1).any() else profiles
    largest = counted.loc[counted["customers"].idxmax()]
    lead = f"The largest segment is {largest['name']} with {pct(largest['share'])} of customers"
    if run.value_term and pd.notna(largest["value_share"]):
        lead += f" and {pct(largest['value_share'])} of {run.value_term}"
    lead += (f". Each card has a rule that picks the segment out of all customers; the rules are "
             f"{_span(profiles['rule_precision'])} precise and find {_span(profiles['rule_recall'])} of their segment.")
    section = Section("segments", "The segments", lead, cards=cards)
    section.note = ("Precision: of the customers the rule picks, the share in the segment. Recall: of the segment, the "
                    "share the rule picks. Key numbers are medians (for yes/no features the share with 1), with the "
                    "value for all customers beside them.")
    return section


def _outcome_fact(run: _Run, outcome: str, row: pd.Series) -> str:
    """``Churn: 63.4% (95 % interval 56.4%–69.9%), 2.17× the rate of all customers (29.2%)``."""
    rate = row[f"{outcome}_rate"]
    if pd.isna(rate):
        return f"{outcome}: not known for any customer of the segment"
    overall = run.folder.features[outcome].astype("float64").mean()
    return (f"{outcome}: {pct(rate)} (95 % interval {pct(row[f'{outcome}_rate_low'])}–"
            f"{pct(row[f'{outcome}_rate_high'])}), {row[f'{outcome}_lift']:.2f}× the rate of all customers "
            f"({pct(overall)})")


def _key_number(series: pd.Series, member: np.ndarray, column: str) -> tuple[str, str, str]:
    """(label, value in the segment, value for all customers): the median, or for a yes/no
    (0/1) feature the share of 1s, whose median would only say 0 or 1."""
    values = series.astype("float64")
    if values.dropna().isin([0.0, 1.0]).all():
        return f"{column} (share with 1)", pct(values[member].mean(), 0), pct(values.mean(), 0)
    return axis_title(column), fmt(values[member].median()), fmt(values.median())


def _span(values: pd.Series) -> str:
    """'77%–96%' (or '100%' when all equal)."""
    low, high = pct(float(values.min()), 0), pct(float(values.max()), 0)
    return low if low == high else f"{low}–{high}"


def _dendrogram(run: _Run, chart: _Charts) -> Section | None:
    estimator = run.folder.model.estimator
    Z = getattr(estimator, "linkage_", None)
    if run.summary.get("algorithm") != "agglomerative" or Z is None or len(Z) < 2:
        return None
    from scipy.cluster.hierarchy import dendrogram, fcluster

    Z = np.asarray(Z, dtype="float64")
    n_leaves = len(Z) + 1
    k = int(getattr(estimator, "n_clusters_", None) or run.summary.get("n_clusters") or 2)
    k = max(1, min(k, n_leaves))
    heights = Z[:, 2]
    below = heights[-k] if k <= len(Z) else 0.0
    above = heights[-k + 1] if k >= 2 else heights[-1] * 1.05
    cut = (below + above) / 2
    clusters = fcluster(Z, t=k, criterion="maxclust")
    fitted = np.asarray(estimator.labels_)
    rows = getattr(estimator, "fit_indices_", None)
    fit_labels = fitted[np.asarray(rows)] if rows is not None else fitted[:n_leaves]
    segment_of_cluster = {
        int(c): int(pd.Series(fit_labels[clusters == c]).mode().iloc[0]) for c in np.unique(clusters)
    }
    leaf = np.zeros(n_leaves + len(Z), dtype="int64")
    leaf[:n_leaves] = np.arange(n_leaves)
    for i, (left, _right, _h, _n) in enumerate(Z):
        leaf[n_leaves + i] = leaf[int(left)]

    def color(node: int) -> str:
        if node >= n_leaves and Z[node - n_leaves, 2] >= cut:
            return "#555555"
        segment = segment_of_cluster[int(clusters[leaf[node]])]
        return run.colors.get(segment, "#555555")

    tree = dendrogram(Z, truncate_mode="lastp", p=max(30, 2 * k), no_plot=True, link_color_func=color)
    leaf_labels = [label if label.startswith("(") else "(1)" for label in tree["ivl"]]
    ratio = above / below if below > 0 else math.inf
    lead = (f"Ward's method merges the two closest groups step by step; cutting the tree at height {fmt(cut)} leaves "
            f"{k} segments. The next merge would happen at {fmt(above)}, {ratio:.1f}× the last merge below the cut"
            + (" — a big jump, so the segments are well apart." if ratio >= 1.5 else " — a small jump, so the segments are close to each other."))
    caption = "Only the last merges are drawn; a leaf in brackets is a group of that many customers. Links below the cut have their segment's colour."
    if getattr(estimator, "sampled_", False):
        caption += (f" The tree was built on a random sample of {int(estimator.n_fit_samples_):,} customers; "
                    "the others joined the segment with the nearest centre.")
    section = Section("dendrogram", "Dendrogram", lead)
    section.charts.append(chart(
        "dendrogram", figs.dendrogram(tree["icoord"], tree["dcoord"], tree["color_list"], leaf_labels, cut=cut, n_clusters=k),
        alt=f"Dendrogram of the Ward tree with a cut into {k} segments", caption=caption,
    ))
    return section


def _uncertainty(run: _Run, chart: _Charts) -> Section | None:
    probability = run.folder.probability
    if probability is None or not np.isfinite(probability).any():
        return None
    labels = run.folder.labels
    segments = [s for s in run.segments if s != -1 and (labels == s).any()]
    certain = float(np.nanmean(probability >= 0.9))
    doubt = {s: float(np.nanmean(probability[labels == s] < 0.9)) for s in segments}
    worst = max(doubt, key=doubt.get)
    lead = (("Every customer belongs" if certain == 1 else f"{pct(certain)} of customers belong")
            + " to their segment with probability 0.9 or more")
    if doubt[worst] > 0.01:
        lead += (f"; the least certain segment is {run.names[worst]}, where {pct(doubt[worst])} are below 0.9 "
                 f"(median {float(np.nanmedian(probability[labels == worst])):.2f}).")
    else:
        lead += ": membership is hardly ever in doubt."
    section = Section("uncertainty", "Membership uncertainty", lead)
    section.charts.append(chart(
        "uncertainty", figs.probability_histograms(probability, labels, segments=segments, names=run.names, colors=run.colors),
        alt="Histograms of each customer's probability of belonging to its segment, one per segment",
        caption="The mixture model gives every customer a probability for each segment; drawn here is the probability "
                "of the segment it was put in. Customers near 1 are typical; customers near 0.5 sit between segments.",
    ))
    return section


def _best_worst(run: _Run, chart: _Charts) -> Section:
    best, worst = run.summary.get("best_segment"), run.summary.get("worst_segment")
    value_column = run.summary.get("value_column")
    if best is None or worst is None or not value_column:
        return Section("best-worst", "Best and worst segments",
                       "The data has no value column (monetary, or spend columns such as Mnt…), so the segments are not ranked by value.")
    best, worst = int(best), int(worst)
    profiles = run.folder.profiles.set_index("segment")
    b, w = profiles.loc[best], profiles.loc[worst]
    ratio = float(b["mean_value"]) / float(w["mean_value"]) if float(w["mean_value"]) > 0 else math.inf
    lead = (f"{run.names[best]} is the best segment with {fmt(b['mean_value'])} of {run.value_term} per customer"
            + (f", {ratio:.1f}× the {fmt(w['mean_value'])} of {run.names[worst]}, the worst" if best != worst else "")
            + f"; {_share_sentence(run, best)}.")
    section = Section("best-worst", "Best and worst segments", lead)
    value_label = "monetary" if value_column == "monetary" else "spend"
    section.charts.append(chart(
        "value", figs.value_per_customer(run.folder.profiles.dropna(subset=["mean_value"]), run.colors, best=best,
                                         worst=worst, value_label=value_label),
        alt=f"Bar chart of mean {run.value_term} per customer in each segment, best first",
        caption=f"Value per customer = {value_column}, averaged over the segment's customers.",
    ))
    if best != worst:
        numeric, _ = _feature_columns(run)
        features, labels = run.folder.features, run.folder.labels
        rows = []
        for column in numeric:
            label, in_best, everyone = _key_number(features[column], labels == best, column)
            rows.append([label, in_best, _key_number(features[column], labels == worst, column)[1], everyone])
        section.tables.append(Table(
            f"Medians (share for yes/no features): best ({run.names[best]}) against worst ({run.names[worst]})",
            [("feature", False), (run.names[best], True), (run.names[worst], True), ("all customers", True)], rows,
        ))
    return section


def _run_record(run: _Run) -> Section:
    summary = run.summary
    record = summary.get("run", {}) or {}
    versions = record.get("versions", {}) or {}
    rows = [
        ["source", source_name(summary, full=True)],
        ["kind", str(summary.get("kind", ""))],
        ["customers", f"{int(record.get('customers', run.folder.customers)):,}"],
        ["as of", str(summary.get("as_of", ""))],
        ["algorithm", f"{run.algorithm_label} ({summary.get('algorithm')}), {summary.get('n_clusters')} segments"],
        ["features", ", ".join(summary.get("feature_columns", []))],
        ["random seed", str((record.get("config") or {}).get("random_state", ""))],
        ["data fingerprint", str(record.get("fingerprint", ""))],
        ["trained at", str(record.get("trained_at", ""))],
        ["run time", f"{record['seconds']} s" if "seconds" in record else ""],
        ["versions", ", ".join(f"{k} {v}" for k, v in versions.items())],
        ["run folder", str(run.folder.path)],
    ]
    section = Section("run", "Run record", "How this run was made, to reproduce it or compare it with a later one.")
    section.tables.append(Table("Run record", [("item", False), ("value", False)], [r for r in rows if r[1]]))
    return section


# --- building --------------------------------------------------------------------------------

class MapAhead:
    """The report's t-SNE map of a run, started before the run folder is written (by the run
    that writes it, from its clustering matrix) and computed beside that work.

    Use it as a context manager around the writing and :func:`build_report` (``map_ahead=``),
    which takes its layout only if the folder's matrix gives the same points (else it computes
    its own); leaving the block stops a map nobody took.
    """

    def __init__(self, matrix: pd.DataFrame, *, max_points: int = 5000, random_state: int = 0) -> None:
        self.options = (max_points, random_state)
        points = _points_of(_numbers(matrix), max_points=max_points, random_state=random_state)
        self.input = points.tsne_input if isinstance(points, _MapPoints) else None
        self.background = _Background(_tsne, self.input, random_state=random_state)

    def __enter__(self) -> MapAhead:
        self.background.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.background.__exit__(*exc)

    @property
    def running(self) -> bool:
        """Whether the map is being computed in a process of its own (else it is computed when
        asked for, or not at all)."""
        return self.background.pending is not None

    def later(self, task: Callable[..., Any], *args: Any) -> Callable[[], bool] | None:
        """``task(*args)`` in the map's process once the work given it before is done; returns a
        function that waits for it and tells whether it succeeded, or None where the map has no
        process of its own.  (The arguments travel there pickled.)"""
        if self.background.pool is None:
            return None
        pending = self.background.pool.apply_async(task, args)

        def done() -> bool:
            try:
                pending.get()
            except Exception:
                return False
            return True
        return done

    def layout_for(self, points: _MapPoints | str, *, max_points: int, random_state: int
                   ) -> Callable[[], np.ndarray | None] | None:
        """The started layout's ``result`` if it is the layout of ``points``, else None."""
        if (self.input is None or not isinstance(points, _MapPoints) or self.options != (max_points, random_state)
                or not np.array_equal(points.tsne_input, self.input)):
            return None
        return self.background.result


def _sections(folder: RunFolder, *, max_points: int, random_state: int,
              map_ahead: MapAhead | None = None) -> list[Section]:
    run = _prepare(folder)
    chart = _Charts()
    points = _map_points(run, max_points=max_points, random_state=random_state)
    started = None if map_ahead is None else map_ahead.layout_for(points, max_points=max_points,
                                                                   random_state=random_state)
    # The t-SNE layout, the costliest chart, is computed beside the other sections.
    with _Background(_tsne, points.tsne_input if isinstance(points, _MapPoints) and started is None else None,
                     random_state=random_state) as tsne:
        sections = [
            _overview(run, chart),
            _data(run, chart),
            _distributions(run, chart),
            _correlations(run, chart),
            _rfm(run, chart),
            _cohorts(run, chart),
            _selection(run, chart),
            _leaderboard(run),
            _profiles(run, chart),
            _segments(run),
            _dendrogram(run, chart),
            _uncertainty(run, chart),
            _best_worst(run, chart),
            _run_record(run),
        ]
        # The maps come after the leaderboard, as before; their t-SNE is awaited last.
        sections.insert(8, _maps(run, chart, points, started or tsne.result, max_points=max_points,
                                 random_state=random_state))
    return [s for s in sections if s is not None]


class _Background:
    """``task(data, **options)`` in a forked process while this one goes on, where that is safe
    (Linux, two cores or more, not from a daemonic process); else here, when ``result()`` is
    first called.  ``data`` None: no task, ``result()`` gives None."""

    def __init__(self, task: Callable[..., Any], data: Any, **options: Any) -> None:
        self.task, self.data, self.options = task, data, options
        self.pool: Any = None
        self.pending: Any = None

    def __enter__(self) -> _Background:
        if self.data is not None and can_fork(min_cores=2):
            import multiprocessing

            self.pool = multiprocessing.get_context("fork").Pool(1)
            self.pending = self.pool.apply_async(self.task, (self.data,), self.options)
        return self

    def result(self) -> Any:
        if self.data is None:
            return None
        if self.pending is None:
            return self.task(self.data, **self.options)
        return self.pending.get()

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if self.pool is None:
            return
        if kind is None:
            self.pool.close()
        else:
            self.pool.terminate()
        self.pool.join()
        self.pool = None


def _render(folder: RunFolder, sections: Sequence[Section]) -> str:
    import jinja2
    from plotly.offline import get_plotlyjs

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("custseg.report", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    summary = folder.summary
    source = source_name(summary)
    labels = _algorithm_labels()
    algorithm = str(summary.get("algorithm"))
    subtitle = " · ".join(part for part in (
        f"{folder.customers:,} customers",
        f"{summary.get('n_clusters')} segments by {labels.get(algorithm, algorithm)}",
        f"as of {str(summary.get('as_of', ''))[:10]}" if summary.get("as_of") else "",
    ) if part)
    return env.get_template("report.html").render(
        title=f"Customer segments — {source}",
        subtitle=subtitle,
        built=datetime.now().isoformat(timespec="seconds"),
        version=_version(),
        run_dir=str(folder.path),
        sections=sections,
        plotly_js=get_plotlyjs(),
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("custseg")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def build_report(
    run_dir: str | os.PathLike[str] | RunFolder,
    *,
    out: str | os.PathLike[str] | None = None,
    max_points: int = 5000,
    random_state: int = 0,
    map_ahead: MapAhead | None = None,
) -> Path:
    """Write a self-contained HTML report of the run folder ``run_dir``; return its path.

    Reads only the files ``custseg segment --out RUN_DIR`` wrote there (assignments.csv,
    profiles.csv, segment_lifts.csv, leaderboard.csv, elbow.csv, features.parquet,
    cleaning.csv, run.json, model.skops, and rfm.csv / cohorts.csv when present) and writes
    ``RUN_DIR/report.html`` (or ``out``) atomically: one HTML file with plotly.js embedded
    once, which opens offline in any browser.  Scatter plots draw a random sample of at most
    ``max_points`` customers, seeded by ``random_state``.  ``run_dir`` may also be the
    :class:`~custseg.runs.RunFolder` already read from it (the run that wrote it passes its own,
    and its :class:`MapAhead`).

    >>> build_report("segments")  # doctest: +SKIP
    PosixPath('segments/report.html')
    """
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 10:
        raise ConfigError(f"max_points must be an integer >= 10, got {max_points!r}; pass e.g. max_points=5000")
    if isinstance(random_state, bool) or not isinstance(random_state, int) or random_state < 0:
        raise ConfigError(f"random_state must be an integer >= 0, got {random_state!r}; pass e.g. random_state=0")
    folder = run_dir if isinstance(run_dir, RunFolder) else read_run(run_dir)
    target = Path(out) if out is not None else folder.path / "report.html"
    if target.is_dir():
        raise ConfigError(f"{{param}} {literal(str(target))}: is a folder; give a file name such as "
                          f"{literal(str(target / 'report.html'))}", param="out")
    if not target.parent.exists():
        raise ConfigError(f"{{param}} {literal(str(target))}: folder '{literal(str(target.parent))}' does not exist; "
                          "create it first", param="out")
    html = _render(folder, _sections(folder, max_points=max_points, random_state=random_state, map_ahead=map_ahead))
    _write_atomically(html, target)
    return target


def _write_atomically(text: str, path: Path) -> None:
    from custseg.outputs import write_text

    write_text(text, path)