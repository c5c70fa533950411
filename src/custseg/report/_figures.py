"""Plotly figures of the report: pure functions from tables to ``go.Figure``.

Every figure carries its data pre-aggregated (histogram counts, box quartiles, sampled
points), so the report's size does not grow with the number of customers.  Colours come
from the Okabe-Ito palette, which stays distinguishable with the common colour-vision
deficiencies; continuous scales are Cividis (sequential) and RdBu (diverging).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

#: Okabe & Ito (2008), ordered so the first colours are the most distinct on white.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#000000",  # black
    "#F0E442",  # yellow (last: weak contrast on white)
)
#: Colour of customers in no segment (label -1).
NOISE_COLOR = "#999999"
#: Marker symbols cycled once the palette runs out, so segment 9 differs from segment 1.
_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x")
_SEQUENTIAL = "Cividis"
_DIVERGING = "RdBu_r"
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"

_AXIS = dict(showgrid=True, gridcolor="#e6e6e6", zeroline=False, linecolor="#777", ticks="outside",
             tickcolor="#777", automargin=True, title=dict(standoff=8))
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family=_FONT, size=13, color="#222"),
    title=dict(font=dict(size=15), x=0, xanchor="left", pad=dict(l=4)),
    paper_bgcolor="white",
    plot_bgcolor="white",
    colorway=list(OKABE_ITO),
    xaxis=_AXIS,
    yaxis=_AXIS,
    legend=dict(bgcolor="rgba(255,255,255,0.8)"),
    hoverlabel=dict(font=dict(family=_FONT, size=12)),
    margin=dict(l=10, r=10, t=48, b=10),
    autosize=True,
))


# --- small helpers -----------------------------------------------------------------------

def segment_colors(segments: Sequence[int]) -> dict[int, str]:
    """One colour per segment id (noise grey), stable for the whole report."""
    ids = [s for s in sorted(set(int(s) for s in segments)) if s != -1]
    colors = {s: OKABE_ITO[i % len(OKABE_ITO)] for i, s in enumerate(ids)}
    if -1 in set(int(s) for s in segments):
        colors[-1] = NOISE_COLOR
    return colors


def segment_symbols(segments: Sequence[int]) -> dict[int, str]:
    ids = [s for s in sorted(set(int(s) for s in segments)) if s != -1]
    symbols = {s: _SYMBOLS[(i // len(OKABE_ITO)) % len(_SYMBOLS)] for i, s in enumerate(ids)}
    symbols[-1] = "circle-open"
    return symbols


def fmt(value: float | int | None) -> str:
    """A number for people: thousands separators, few decimals, '—' for missing."""
    if value is None:
        return "—"
    value = float(value)
    if not math.isfinite(value):
        return "—"
    if value == round(value) and abs(value) < 1e15:
        return f"{int(round(value)):,}"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:,.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.2g}"


def pct(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(float(value)):
        return "—"
    return f"{100 * float(value):.{digits}f}%"


def _layout(fig: go.Figure, *, title: str, height: int, **kwargs) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=dict(text=title), height=height, **kwargs)
    return fig


def is_skewed(values: np.ndarray) -> bool:
    """Long right tail of non-negative values with many distinct values: draw on a log axis."""
    values = values[np.isfinite(values)]
    if len(values) < 3 or values.min() < 0 or len(np.unique(values)) <= 10:
        return False
    return bool(pd.Series(values).skew() > 1)


def _log_ticks(high: float) -> tuple[list[float], list[str]]:
    """Tick positions (in log1p space) and labels (original units) from 0 to ``high``."""
    steps = (1, 2, 5) if high < 1_000 else (1,)
    ticks = [0.0]
    decade = 1.0
    while decade <= high * 1.0001:
        for step in steps:
            if step * decade <= high * 1.0001:
                ticks.append(step * decade)
        decade *= 10
    if len(ticks) > 8:
        ticks = [0.0] + [t for t in ticks[1:] if math.log10(t).is_integer()]
    return [math.log1p(t) for t in ticks], [fmt(t) for t in ticks]


# --- customers and value -------------------------------------------------------------------

def size_and_value(profiles: pd.DataFrame, colors: Mapping[int, str], *, value_term: str | None) -> go.Figure:
    """Grouped bars: share of customers and share of value per segment."""
    names = profiles["name"].tolist()
    fig = go.Figure()
    fig.add_bar(
        x=names, y=profiles["share"], name="share of customers", marker_color="#0072B2",
        text=[pct(v) for v in profiles["share"]], textposition="outside",
        hovertemplate="%{x}<br>%{y:.1%} of customers<extra></extra>",
    )
    if value_term and profiles["value_share"].notna().any():
        fig.add_bar(
            x=names, y=profiles["value_share"], name=f"share of {value_term}", marker_color="#E69F00",
            marker_pattern_shape="/", text=[pct(v) for v in profiles["value_share"]], textposition="outside",
            hovertemplate=f"%{{x}}<br>%{{y:.1%}} of {value_term}<extra></extra>",
        )
    top = float(np.nanmax(profiles[["share", "value_share"]].to_numpy(dtype="float64")))
    fig.update_yaxes(title_text="share (%)", tickformat=".0%", range=[0, min(1.0, top * 1.18 + 0.02)])
    fig.update_xaxes(title_text="segment")
    return _layout(fig, title="Share of customers and of value by segment", height=380, barmode="group",
                   legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))


def value_per_customer(profiles: pd.DataFrame, colors: Mapping[int, str], *, best: int | None, worst: int | None,
                       value_label: str) -> go.Figure:
    """Bars of mean value per customer by segment, best and worst marked."""
    ordered = profiles.sort_values("mean_value", ascending=False)
    text = []
    for row in ordered.itertuples(index=False):
        mark = " (best)" if row.segment == best else " (worst)" if row.segment == worst else ""
        text.append(fmt(row.mean_value) + mark)
    fig = go.Figure(go.Bar(
        x=ordered["name"], y=ordered["mean_value"], marker_color=[colors[int(s)] for s in ordered["segment"]],
        text=text, textposition="outside", cliponaxis=False,
        hovertemplate="%{x}<br>%{y:,.0f} per customer<extra></extra>",
    ))
    fig.update_yaxes(title_text=f"{value_label} per customer (currency)", rangemode="tozero")
    fig.update_xaxes(title_text="segment (best first)")
    return _layout(fig, title="Value per customer by segment", height=380, showlegend=False)


# --- data ------------------------------------------------------------------------------------

def cleaning_bars(cleaning: pd.DataFrame) -> go.Figure:
    """Horizontal bars: rows dropped by each rule, and rows kept."""
    rows = cleaning[cleaning["rows"] > 0].iloc[::-1]
    colors = ["#009E73" if r == "kept" else "#D55E00" for r in rows["rule"]]
    fig = go.Figure(go.Bar(
        y=rows["rule"], x=rows["rows"], orientation="h", marker_color=colors,
        text=[fmt(v) for v in rows["rows"]], textposition="auto", customdata=rows["description"],
        hovertemplate="%{y}: %{x:,} rows<br>%{customdata}<extra></extra>",
    ))
    fig.update_xaxes(title_text="rows of the source")
    fig.update_yaxes(title_text="cleaning rule", showgrid=False)
    return _layout(fig, title="Rows dropped by each cleaning rule, and rows kept", height=120 + 36 * len(rows),
                   showlegend=False)


def feature_histogram(
    values: np.ndarray, labels: np.ndarray, *, segments: Sequence[int], names: Mapping[int, str],
    colors: Mapping[int, str], title: str, axis_title: str, notes: Sequence[str] = (), bins: int = 30,
) -> tuple[go.Figure, bool]:
    """Customer counts per bin of one numeric feature, stacked by segment.

    Returns the figure and whether the x axis is logarithmic (``log(1 + x)``, for skewed
    non-negative features).  Missing values are left out.
    """
    finite = np.isfinite(values)
    values, labels = values[finite], labels[finite]
    log = is_skewed(values)
    shown = np.log1p(values) if log else values
    distinct = np.unique(values)
    if not log and len(distinct) <= 30 and np.all(distinct == np.round(distinct)):
        edges = np.arange(distinct.min() - 0.5, distinct.max() + 1.5, 1.0)
    else:
        low, high = (float(shown.min()), float(shown.max())) if len(shown) else (0.0, 1.0)
        edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0])
    low_text = np.expm1(edges[:-1]) if log else edges[:-1]
    high_text = np.expm1(edges[1:]) if log else edges[1:]
    ranges = [f"{fmt(a)} to {fmt(b)}" for a, b in zip(low_text, high_text)]
    fig = go.Figure()
    for segment in segments:
        counts, _ = np.histogram(shown[labels == segment], bins=edges)
        fig.add_bar(
            x=centers, y=counts, width=width, name=names[segment], marker_color=colors[segment],
            marker_line_width=0, customdata=ranges, legendgroup=str(segment),
            hovertemplate=f"{names[segment]}<br>%{{customdata}}: %{{y:,}} customers<extra></extra>",
        )
    if log:
        tickvals, ticktext = _log_ticks(float(values.max()) if len(values) else 1.0)
        fig.update_xaxes(tickvals=tickvals, ticktext=ticktext, title_text=axis_title)
    else:
        fig.update_xaxes(title_text=axis_title)
    fig.update_yaxes(title_text="customers")
    notes = [*notes, "log scale"] if log else list(notes)
    _layout(fig, title=_two_lines(title, notes), height=310, barmode="stack", bargap=0, showlegend=False,
            margin=dict(l=10, r=10, t=56, b=10))
    return fig, log


def _two_lines(title: str, notes: Sequence[str]) -> str:
    """A small-multiple title: the feature, then its notes in small grey type."""
    if not notes:
        return title
    return f"{title}<br><span style='font-size:12px;color:#57606a'>{' · '.join(notes)}</span>"


def category_bars(
    values: pd.Series, labels: np.ndarray, *, segments: Sequence[int], names: Mapping[int, str],
    colors: Mapping[int, str], title: str, notes: Sequence[str] = (), top: int = 12,
) -> go.Figure:
    """Customer counts per category (the ``top`` most frequent, the rest as 'other'), stacked by segment."""
    text = values.astype("string").fillna("(missing)")
    keep = text.value_counts().index[:top]
    text = text.where(text.isin(keep), "other")
    order = list(keep) + (["other"] if (text == "other").any() else [])
    fig = go.Figure()
    for segment in segments:
        counts = text[labels == segment].value_counts().reindex(order, fill_value=0)
        fig.add_bar(x=order, y=counts.to_numpy(), name=names[segment], marker_color=colors[segment],
                    hovertemplate=f"{names[segment]}<br>%{{x}}: %{{y:,}} customers<extra></extra>")
    fig.update_xaxes(title_text=f"{values.name} (category)", type="category")
    fig.update_yaxes(title_text="customers")
    return _layout(fig, title=_two_lines(title, notes), height=310, barmode="stack", showlegend=False,
                   margin=dict(l=10, r=10, t=56, b=10))


def correlation_heatmap(corr: pd.DataFrame) -> go.Figure:
    """Spearman correlation matrix, diverging colours centred on 0."""
    n = len(corr)
    fig = go.Figure(go.Heatmap(
        z=corr.to_numpy(), x=list(corr.columns), y=list(corr.index), zmin=-1, zmax=1, zmid=0,
        colorscale=_DIVERGING, colorbar=dict(title=dict(text="Spearman ρ"), thickness=14),
        texttemplate="%{z:.2f}" if n <= 14 else None, textfont=dict(size=11 if n <= 10 else 9),
        hovertemplate="%{y} vs %{x}<br>ρ = %{z:.2f}<extra></extra>", xgap=1, ygap=1,
    ))
    fig.update_xaxes(title_text="feature", tickangle=-40, showgrid=False)
    fig.update_yaxes(title_text="feature", autorange="reversed", showgrid=False)
    side = max(380, min(860, 140 + 30 * n))
    return _layout(fig, title="Rank correlation between features (−1 to 1)", height=side)


# --- RFM and cohorts -------------------------------------------------------------------------

def rfm_treemap(summary: pd.DataFrame) -> go.Figure:
    """Treemap: area = customers, colour = share of revenue, per RFM segment."""
    labels = list(summary["rfm_segment"])
    values = list(summary["customers"])
    revenue = list(summary["revenue_share"])
    share = list(summary["share"])
    fig = go.Figure(go.Treemap(
        labels=labels, parents=[""] * len(labels), values=values,
        customdata=np.column_stack([share, revenue]),
        marker=dict(colors=revenue, colorscale=_SEQUENTIAL, cmin=0, cmax=float(summary["revenue_share"].max()),
                    colorbar=dict(title=dict(text="share of revenue"), tickformat=".0%", thickness=14),
                    line=dict(color="white", width=2), pad=dict(t=0, l=0, r=0, b=0)),
        texttemplate="<b>%{label}</b><br>%{customdata[0]:.1%} of customers<br>%{customdata[1]:.1%} of revenue",
        hovertemplate="%{label}<br>%{value:,} customers (%{customdata[0]:.1%})<br>%{customdata[1]:.1%} of revenue<extra></extra>",
        pathbar=dict(visible=False), tiling=dict(pad=2), sort=True, root=dict(color="white"),
    ))
    return _layout(fig, title="RFM segments: area = customers, colour = share of revenue", height=460,
                   margin=dict(l=10, r=10, t=48, b=10))


def rfm_crosstab(mix: pd.DataFrame) -> go.Figure:
    """Heatmap: for each found segment, the share of its customers in each RFM segment."""
    z = mix.to_numpy(dtype="float64")
    text = np.where(z >= 0.005, np.vectorize(lambda v: f"{v:.0%}")(z), "")
    fig = go.Figure(go.Heatmap(
        z=z, x=list(mix.columns), y=list(mix.index), zmin=0, zmax=1, colorscale=_SEQUENTIAL,
        text=text, texttemplate="%{text}", textfont=dict(size=11), xgap=1, ygap=1,
        colorbar=dict(title=dict(text="share of segment"), tickformat=".0%", thickness=14),
        hovertemplate="%{y}: %{z:.1%} are %{x}<extra></extra>",
    ))
    fig.update_xaxes(title_text="RFM segment", showgrid=False, tickangle=-30)
    fig.update_yaxes(title_text="segment found", showgrid=False, autorange="reversed")
    return _layout(fig, title="How the segments found split into RFM segments (each row sums to 100%)",
                   height=max(300, 170 + 42 * len(mix)))


def cohort_heatmap(matrix: pd.DataFrame, row_labels: Sequence[str]) -> go.Figure:
    """Retention heatmap: rows = acquisition cohorts, columns = months since first order."""
    months = [c for c in matrix.columns]
    z = matrix.to_numpy(dtype="float64")
    finite = z[np.isfinite(z)]
    fig = go.Figure(go.Heatmap(
        z=z, x=[int(c.removeprefix("month_")) for c in months], y=list(row_labels), zmin=0,
        zmax=float(finite.max()) if finite.size else 1.0, colorscale=_SEQUENTIAL,
        texttemplate="%{z:.0%}" if z.shape[1] <= 16 and z.shape[0] <= 30 else None, textfont=dict(size=10),
        colorbar=dict(title=dict(text="share active"), tickformat=".0%", thickness=14), xgap=1, ygap=1,
        hovertemplate="cohort %{y}<br>month %{x}: %{z:.1%} ordered again<extra></extra>",
    ))
    fig.update_xaxes(title_text="months since first order", dtick=1, showgrid=False)
    fig.update_yaxes(title_text="cohort (month of first order) · customers", autorange="reversed", showgrid=False,
                     type="category")
    return _layout(fig, title="Share of each cohort that ordered again, by month", height=max(360, 140 + 26 * len(row_labels)))


# --- choosing k ------------------------------------------------------------------------------

def elbow_curve(elbow: pd.DataFrame, *, knee: int | None, chosen: int | None) -> go.Figure:
    """K-Means inertia against k with the knee (and the chosen k) marked."""
    fig = go.Figure(go.Scatter(
        x=elbow["k"], y=elbow["inertia"], mode="lines+markers", name="inertia", line=dict(color="#0072B2", width=2),
        marker=dict(size=7), hovertemplate="k = %{x}<br>inertia %{y:,.0f}<extra></extra>",
    ))
    if knee is not None and knee in set(elbow["k"]):
        y = float(elbow.loc[elbow["k"] == knee, "inertia"].iloc[0])
        fig.add_scatter(x=[knee], y=[y], mode="markers", name=f"knee (k = {knee})",
                        marker=dict(symbol="star", size=18, color="#D55E00", line=dict(color="white", width=1)),
                        hovertemplate=f"knee: k = {knee}<extra></extra>")
        fig.add_annotation(x=knee, y=y, text=f"knee: k = {knee}", showarrow=True, arrowhead=2, ax=40, ay=-40)
    if chosen is not None and chosen != knee:
        fig.add_vline(x=chosen, line=dict(color="#009E73", dash="dash"),
                      annotation=dict(text=f"chosen k = {chosen}", textangle=-90, yanchor="top"))
    fig.update_xaxes(title_text="number of segments k", dtick=1)
    fig.update_yaxes(title_text="inertia (sum of squares)", rangemode="tozero")
    return _layout(fig, title="Elbow curve (K-Means)", height=380,
                   legend=dict(orientation="h", y=1.02, yanchor="bottom", x=1, xanchor="right"))


_METRICS = {
    "silhouette": ("Silhouette (higher is better)", "silhouette (−1 to 1)"),
    "davies_bouldin": ("Davies–Bouldin (lower is better)", "Davies–Bouldin index"),
    "calinski_harabasz": ("Calinski–Harabasz (higher is better)", "Calinski–Harabasz index"),
}


def metric_curve(leaderboard: pd.DataFrame, metric: str, *, labels: Mapping[str, str],
                 chosen: tuple[str, int] | None) -> go.Figure:
    """One quality metric against k, one line per algorithm, the chosen fit starred."""
    title, axis = _METRICS[metric]
    fig = go.Figure()
    for i, (algorithm, rows) in enumerate(leaderboard.groupby("algorithm", sort=False)):
        rows = rows.sort_values("n_clusters")
        fig.add_scatter(
            x=rows["n_clusters"], y=rows[metric], mode="lines+markers", name=labels.get(algorithm, algorithm),
            line=dict(color=OKABE_ITO[i % len(OKABE_ITO)], width=2, dash=("solid", "dash", "dot", "dashdot")[i % 4]),
            marker=dict(size=6, symbol=_SYMBOLS[i % len(_SYMBOLS)]),
            hovertemplate=f"{labels.get(algorithm, algorithm)}, k = %{{x}}<br>%{{y:.3g}}<extra></extra>",
        )
    if chosen is not None:
        row = leaderboard[(leaderboard["algorithm"] == chosen[0]) & (leaderboard["n_clusters"] == chosen[1])]
        if len(row) and np.isfinite(row[metric].iloc[0]):
            fig.add_scatter(x=[chosen[1]], y=[float(row[metric].iloc[0])], mode="markers", name="chosen",
                            marker=dict(symbol="star", size=16, color="#D55E00", line=dict(color="white", width=1)),
                            hovertemplate="chosen<extra></extra>")
    fig.update_xaxes(title_text="number of segments k", dtick=1 if leaderboard["n_clusters"].nunique() <= 8 else 2)
    fig.update_yaxes(title_text=axis)
    return _layout(fig, title=title, height=340,
                   legend=dict(orientation="h", y=-0.3, yanchor="top", x=0, xanchor="left"))


# --- maps of customers -----------------------------------------------------------------------

_TOP_LEGEND = dict(orientation="h", y=1.02, yanchor="bottom", x=0, xanchor="left", itemsizing="constant",
                   title=dict(text="segment: "))


def _segment_legend(n: int, *, margin: int = 10) -> dict:
    """A one-line legend above the plot for a few segments; a column on the right for many."""
    if n <= 6:
        return dict(legend=_TOP_LEGEND, margin=dict(l=margin, r=margin, t=84, b=margin))
    return dict(legend=dict(title=dict(text="segment"), itemsizing="constant"),
                margin=dict(l=margin, r=margin, t=48, b=margin))


def scatter_2d(points: np.ndarray, labels: np.ndarray, ids: np.ndarray, *, segments: Sequence[int],
               names: Mapping[int, str], colors: Mapping[int, str], title: str, x_title: str, y_title: str,
               equal: bool = False) -> go.Figure:
    symbols = segment_symbols(segments)
    fig = go.Figure()
    for segment in segments:
        member = labels == segment
        fig.add_scatter(
            x=points[member, 0].astype("float32"), y=points[member, 1].astype("float32"), mode="markers",
            name=names[segment], text=ids[member],
            marker=dict(color=colors[segment], size=5, opacity=0.7, symbol=symbols[segment]),
            hovertemplate=f"customer %{{text}}<br>{names[segment]}<extra></extra>",
        )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title, **({"scaleanchor": "x", "scaleratio": 1} if equal else {}))
    return _layout(fig, title=title, height=520, **_segment_legend(len(segments)))


def scatter_3d(points: np.ndarray, labels: np.ndarray, ids: np.ndarray, *, segments: Sequence[int],
               names: Mapping[int, str], colors: Mapping[int, str], title: str, axis_titles: Sequence[str]) -> go.Figure:
    fig = go.Figure()
    for segment in segments:
        member = labels == segment
        fig.add_scatter3d(
            x=points[member, 0].astype("float32"), y=points[member, 1].astype("float32"),
            z=points[member, 2].astype("float32"), mode="markers", name=names[segment], text=ids[member],
            marker=dict(color=colors[segment], size=2.5, opacity=0.75),
            hovertemplate=f"customer %{{text}}<br>{names[segment]}<extra></extra>",
        )
    fig.update_layout(scene=dict(
        xaxis=dict(title=dict(text=axis_titles[0])), yaxis=dict(title=dict(text=axis_titles[1])),
        zaxis=dict(title=dict(text=axis_titles[2])), aspectmode="cube",
    ))
    return _layout(fig, title=title, height=580, **_segment_legend(len(segments), margin=0))


# --- profiles --------------------------------------------------------------------------------

def lift_heatmap(lifts: pd.DataFrame, names: Sequence[str]) -> go.Figure:
    """Segment × feature lift (segment mean / overall mean) on a log2 colour scale centred on 1."""
    raw = lifts.to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.clip(np.log2(raw), -2, 2)
    text = np.where(np.isfinite(raw), np.vectorize(lambda v: f"×{v:.2f}" if np.isfinite(v) else "")(raw), "")
    n = lifts.shape[1]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(lifts.columns), y=list(names), zmin=-2, zmax=2, zmid=0, colorscale=_DIVERGING,
        text=text, texttemplate="%{text}", textfont=dict(size=11 if n <= 12 else 9), xgap=1, ygap=1,
        customdata=raw, hovertemplate="%{y}<br>%{x}: %{customdata:.2f}× the average<extra></extra>",
        colorbar=dict(title=dict(text="lift"), tickvals=[-2, -1, 0, 1, 2],
                      ticktext=["≤ ×¼", "×½", "×1", "×2", "≥ ×4"], thickness=14),
    ))
    fig.update_xaxes(title_text="feature", tickangle=-40, showgrid=False)
    fig.update_yaxes(title_text="segment", showgrid=False, autorange="reversed")
    return _layout(fig, title="Segment mean ÷ mean of all customers, per feature", height=max(360, 220 + 46 * len(names)))


def dendrogram(icoord: Sequence[Sequence[float]], dcoord: Sequence[Sequence[float]], link_colors: Sequence[str],
               leaf_labels: Sequence[str], *, cut: float, n_clusters: int) -> go.Figure:
    """A (truncated) dendrogram from ``scipy.cluster.hierarchy.dendrogram(..., no_plot=True)``."""
    fig = go.Figure()
    by_color: dict[str, tuple[list, list]] = {}
    for xs, ys, color in zip(icoord, dcoord, link_colors):
        bx, by = by_color.setdefault(color, ([], []))
        bx.extend([*xs, None])
        by.extend([*ys, None])
    for color, (xs, ys) in by_color.items():
        fig.add_scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=1.6), hoverinfo="skip", showlegend=False)
    fig.add_hline(y=cut, line=dict(color="#D55E00", dash="dash", width=1.5),
                  annotation=dict(text=f"cut: {n_clusters} segments", xanchor="right", x=1, yanchor="bottom"))
    positions = [5 + 10 * i for i in range(len(leaf_labels))]
    fig.update_xaxes(tickvals=positions, ticktext=list(leaf_labels), tickangle=-60, showgrid=False,
                     title_text="groups of customers (size in brackets)")
    fig.update_yaxes(title_text="Ward merge distance (standardized units)", rangemode="tozero")
    return _layout(fig, title="Dendrogram (last merges of the Ward tree)", height=440)


def probability_histograms(probability: np.ndarray, labels: np.ndarray, *, segments: Sequence[int],
                           names: Mapping[int, str], colors: Mapping[int, str]) -> go.Figure:
    """One histogram per segment of the membership probability of its customers (share of the segment)."""
    edges = np.linspace(0, 1, 21)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = make_subplots(rows=len(segments), cols=1, shared_xaxes=True, vertical_spacing=min(0.12, 0.36 / len(segments)),
                        subplot_titles=[names[s] for s in segments])
    for row, segment in enumerate(segments, start=1):
        p = probability[labels == segment]
        counts, _ = np.histogram(p[np.isfinite(p)], bins=edges)
        share = counts / max(1, counts.sum())
        fig.add_bar(x=centers, y=share, width=0.05, marker_color=colors[segment], marker_line_width=0,
                    name=names[segment], customdata=counts, row=row, col=1,
                    hovertemplate=f"{names[segment]}<br>probability %{{x:.3f}} ± 0.025: %{{customdata:,}} customers (%{{y:.1%}})<extra></extra>")
        fig.update_yaxes(tickformat=".0%", row=row, col=1, rangemode="tozero")
    fig.update_xaxes(range=[0, 1.0], row=len(segments), col=1, title_text="probability of belonging to its segment")
    fig.update_yaxes(title_text="share of segment", row=(len(segments) + 1) // 2, col=1)
    fig.update_annotations(font=dict(size=12), xanchor="left", x=0)
    return _layout(fig, title="How certain is each customer's segment?", height=140 + 150 * len(segments),
                   showlegend=False, bargap=0)
