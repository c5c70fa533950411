"""Profiles a marketer understands: size, value, how each segment differs, a rule, a name.

Input: the customer feature table (one row per customer, unscaled: the numbers people know)
and one segment label per row (``-1`` = noise / unassigned).  Output: :class:`Profiles`.

* **lift** of a feature in a segment = segment mean / mean of all customers.
* **distinguishing features**: largest ``|segment mean − overall mean| / overall std``.
* **rule**: a shallow decision tree (one segment against the rest) on the unscaled features;
  the rule is the path to the leaf that describes the segment best (highest F1), with its precision and recall
  measured on every customer (its *fidelity*).
* **name**: with recency, frequency and monetary columns, the segment's median customer is
  scored against all customers like an RFM code and named by the RFM segment map (e.g.
  "Champions"), followed by the evidence ("bought 9 days ago, 12 orders, spends 6.1× the
  average").  Without them, the two most distinguishing features ("High Income, low Kidhome");
  when no number sets a segment apart (a table of categories only), the two category levels
  most over-represented in it ("Plan pro, region north").
  Names are unique: a repeated name gets its most distinguishing feature added.
* **value**: ``value_column`` when given; else ``monetary`` when present; else a column named
  like a total (``TotalCharges``, ``total_spend``, ``Total Revenue``); otherwise the sum of
  spend-like columns (names starting with ``Mnt`` or containing spend, amount, revenue, sales or
  charges); best and worst segments rank by mean value per customer.
* **outcomes** (0/1 columns that record a result — churned, responded — not a trait): per
  segment the rate among customers whose outcome is known, its lift against all customers and
  a 95 % Wilson score interval.  They take no part in lifts, rules or names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeClassifier

from custseg import rfm
from custseg.errors import ConfigError, DataError, literal

__all__ = ["Profiles", "SegmentProfile", "profile", "value_of", "wilson_interval", "OUTCOME_STATS"]

_NOT_FEATURES = ("customer_id", "first_order_at", "last_order_at")
_RULE_SAMPLE = 50_000
_RFM = ("recency_days", "frequency", "monetary")


@dataclass(frozen=True)
class SegmentProfile:
    segment: int
    name: str
    description: str
    customers: int
    share: float
    value_share: float | None
    mean_value: float | None
    rule: str
    rule_precision: float
    rule_recall: float
    distinguishing: tuple[tuple[str, float], ...]  # (feature, lift), most distinguishing first


@dataclass(frozen=True)
class Profiles:
    """``table``: one row per segment (segment, name, customers, share, value_share, rule,
    rule_precision, rule_recall, description); ``medians``, ``means``, ``lifts``: segment ×
    feature; ``rfm_mix``: segment × RFM segment shares (when RFM segments were given)."""

    segments: tuple[SegmentProfile, ...]
    table: pd.DataFrame
    medians: pd.DataFrame
    means: pd.DataFrame
    lifts: pd.DataFrame
    rfm_mix: pd.DataFrame | None
    value_column: str | None
    best: int | None
    worst: int | None
    outcomes: pd.DataFrame | None = None  # segment, outcome, known, positive, rate, lift, rate_low, rate_high

    def name_of(self, segment: int) -> str:
        return next(p.name for p in self.segments if p.segment == segment)


_SPEND = r"spend|amount|revenue|sales|charges"


def value_of(
    features: pd.DataFrame, column: str | None = None, *, exclude: Sequence[str] = ()
) -> tuple[pd.Series | None, str | None]:
    """The value of each customer (see the module docstring) and what it is called.

    ``column`` names it (``value_column``); ``exclude`` lists columns that are not values (outcomes).
    """
    if column is not None:
        if column not in features.columns or column in _NOT_FEATURES:
            usable = [c for c in features.columns if c not in _NOT_FEATURES and pd.api.types.is_numeric_dtype(features[c])]
            raise ConfigError(
                f"{{param}} {literal(column)}: no such column among the customer features; choose one of "
                f"{literal(', '.join(usable))}",
                param="value_column",
            )
        if not pd.api.types.is_numeric_dtype(features[column]) or pd.api.types.is_bool_dtype(features[column]):
            raise ConfigError(f"{{param}} {literal(column)}: the column holds {features[column].dtype} values, "
                              "not amounts; choose a column of numbers", param="value_column")
        return features[column].astype("float64"), column
    if "monetary" in features:
        return features["monetary"].astype("float64"), "monetary"
    numeric = [
        c for c in features.columns
        if c not in _NOT_FEATURES and c not in exclude and pd.api.types.is_numeric_dtype(features[c])
        and not pd.api.types.is_bool_dtype(features[c])
    ]
    total = next((c for c in numeric if "total" in c.lower() and re.search(_SPEND + "|value", c.lower())), None)
    if total is not None:
        return features[total].astype("float64"), total
    spend = [c for c in numeric if c.lower().startswith("mnt") or re.search(_SPEND, c.lower())]
    if not spend:
        return None, None
    label = spend[0] if len(spend) == 1 else "total of " + ", ".join(spend)
    return features[spend].sum(axis=1).astype("float64"), label


#: Per-outcome columns of the profile table, each prefixed with the outcome's name.
OUTCOME_STATS = ("rate", "lift", "rate_low", "rate_high")


def wilson_interval(positive: int, known: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a rate ``positive / known`` (NaN, NaN when ``known`` is 0).

    scipy's ``binomtest(...).proportion_ci(method="wilson")`` computes it; it stays sensible
    for small segments and rates near 0 or 1, where the normal approximation does not.

    >>> [round(x, 4) for x in wilson_interval(15, 50)]
    [0.191, 0.4375]
    """
    if known == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(positive), int(known)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _outcome_table(features: pd.DataFrame, labels: np.ndarray, outcomes: Sequence[str]) -> pd.DataFrame | None:
    rows = []
    for outcome in outcomes:
        values = pd.to_numeric(features[outcome], errors="coerce").astype("float64").to_numpy()
        known_all = ~np.isnan(values)
        overall = float(values[known_all].mean()) if known_all.any() else float("nan")
        for segment in sorted(set(labels.tolist())):
            member = (labels == segment) & known_all
            known, positive = int(member.sum()), int(values[member].sum())
            rate = positive / known if known else float("nan")
            low, high = wilson_interval(positive, known)
            rows.append({"segment": int(segment), "outcome": outcome, "known": known, "positive": positive,
                         "rate": rate, "lift": rate / overall if overall else float("nan"),
                         "rate_low": low, "rate_high": high})
    return pd.DataFrame(rows) if rows else None


def profile(
    features: pd.DataFrame,
    labels: Sequence[int] | np.ndarray,
    *,
    columns: Sequence[str] | None = None,
    rfm_segments: pd.Series | None = None,
    max_depth: int = 3,
    random_state: int | None = 0,
    outcomes: Sequence[str] = (),
    value_column: str | None = None,
) -> Profiles:
    """Profile every segment of ``labels`` (aligned with the rows of ``features``).

    ``outcomes`` are 0/1 columns profiled as rates (and left out of everything else);
    ``value_column`` names the value that "value share" adds up (see :func:`value_of`).
    """
    labels = np.asarray(labels)
    if len(labels) != len(features):
        raise DataError(f"profile: {len(labels)} labels for {len(features)} customers; they must match")
    if len(features) == 0:
        raise DataError("profile: no customers to profile")
    outcomes = [c for c in outcomes if c in features.columns]
    numeric = [
        c for c in (columns or features.columns)
        if c not in _NOT_FEATURES and c not in outcomes and pd.api.types.is_numeric_dtype(features[c])
        and not pd.api.types.is_bool_dtype(features[c])
    ]
    data = features[numeric].astype("float64")
    value, value_column = value_of(features, value_column, exclude=outcomes)
    segments = sorted(set(labels.tolist()))
    grouped = data.groupby(labels)
    means, medians = grouped.mean(), grouped.median()
    overall_mean, overall_std = data.mean(), data.std(ddof=0).replace(0, np.nan)
    lifts = means / overall_mean.replace(0, np.nan)
    z = (means - overall_mean) / overall_std

    rule_frame = _rule_frame(features.drop(columns=outcomes), numeric)
    counts = pd.Series(labels).value_counts()
    total_value = float(value.sum()) if value is not None else None
    profiles = []
    for segment in segments:
        member = labels == segment
        order = z.loc[segment].abs().sort_values(ascending=False).dropna()
        distinguishing = tuple((f, float(lifts.loc[segment, f])) for f in order.index[:5])
        rule, precision, recall = _rule(rule_frame, member, max_depth=max_depth, random_state=random_state)
        seg_value = float(value[member].sum()) if value is not None else None
        profiles.append(dict(
            segment=int(segment),
            customers=int(counts[segment]),
            share=float(counts[segment] / len(labels)),
            value_share=(seg_value / total_value) if total_value else None,
            mean_value=(seg_value / counts[segment]) if value is not None else None,
            rule=rule, rule_precision=precision, rule_recall=recall,
            distinguishing=distinguishing,
        ))
    categorical = _categorical_columns(features.drop(columns=outcomes), numeric)
    _name(profiles, features, labels, medians, means, z, _level_shares(features, labels, categorical))
    ranked = [p for p in profiles if p["segment"] != -1 and p["mean_value"] is not None]
    best = max(ranked, key=lambda p: p["mean_value"])["segment"] if ranked else None
    worst = min(ranked, key=lambda p: p["mean_value"])["segment"] if ranked else None
    result = tuple(SegmentProfile(**p) for p in profiles)
    table = pd.DataFrame([{
        "segment": p.segment, "name": p.name, "customers": p.customers, "share": p.share,
        "value_share": p.value_share, "mean_value": p.mean_value, "rule": p.rule,
        "rule_precision": p.rule_precision, "rule_recall": p.rule_recall,
        "description": p.description,
        "distinguishing": ", ".join(f"{f} ×{lift:.2f}" for f, lift in p.distinguishing[:3]),
    } for p in result])
    outcome_table = _outcome_table(features, labels, outcomes)
    if outcome_table is not None:
        for outcome, stats in outcome_table.groupby("outcome", sort=False):
            by_segment = stats.set_index("segment")
            for stat in OUTCOME_STATS:
                table[f"{outcome}_{stat}"] = table["segment"].map(by_segment[stat]).astype("float64")
    mix = None
    if rfm_segments is not None:
        mix = pd.crosstab(labels, np.asarray(rfm_segments), normalize="index")
        mix.index.name, mix.columns.name = "segment", "rfm_segment"
    for frame in (medians, means, lifts):
        frame.index.name = "segment"
    return Profiles(result, table, medians, means, lifts, mix, value_column, best, worst, outcome_table)


# --- rules ---------------------------------------------------------------------------------

def _categorical_columns(features: pd.DataFrame, numeric: list[str]) -> list[str]:
    """The text or category columns with few enough values (≤ 30) for rules and names."""
    return [
        c for c in features.columns
        if c not in _NOT_FEATURES and c not in numeric
        and (pd.api.types.is_string_dtype(features[c]) or isinstance(features[c].dtype, pd.CategoricalDtype))
        and features[c].nunique() <= 30
    ]


def _rule_frame(features: pd.DataFrame, numeric: list[str]) -> pd.DataFrame:
    categorical = _categorical_columns(features, numeric)
    frame = features[numeric].astype("float64").fillna(features[numeric].median(numeric_only=True))
    if categorical:
        dummies = pd.get_dummies(features[categorical].astype("string"), prefix_sep="=", dtype="float64")
        frame = pd.concat([frame, dummies], axis=1)
    return frame


def _rule(frame: pd.DataFrame, member: np.ndarray, *, max_depth: int, random_state) -> tuple[str, float, float]:
    if member.all():
        return "every customer", 1.0, 1.0
    rng = np.random.default_rng(random_state)
    index = np.arange(len(frame))
    if len(index) > _RULE_SAMPLE:
        index = np.sort(rng.choice(index, _RULE_SAMPLE, replace=False))
    tree = DecisionTreeClassifier(
        max_depth=max_depth, min_samples_leaf=max(1, len(index) // 200),
        class_weight="balanced", random_state=random_state,
    ).fit(frame.iloc[index].to_numpy(), member[index])
    inner = tree.tree_
    names = list(frame.columns)
    # The rule is the path to the leaf that best describes the segment on its own: the
    # highest F1 (precision and recall together) among the fit rows.
    leaves = tree.apply(frame.iloc[index].to_numpy())
    inside = member[index]
    best_leaf, best_f1 = None, -1.0
    for leaf in np.unique(leaves):
        hits = inside[leaves == leaf]
        precision = hits.mean()
        recall = hits.sum() / max(inside.sum(), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if f1 > best_f1:
            best_leaf, best_f1 = leaf, f1
    paths: dict[int, list[tuple[int, bool, float]]] = {}

    def walk(node: int, path: list[tuple[int, bool, float]]) -> None:
        if inner.children_left[node] == -1:
            paths[node] = path
            return
        feature, threshold = inner.feature[node], inner.threshold[node]
        walk(inner.children_left[node], path + [(feature, True, threshold)])
        walk(inner.children_right[node], path + [(feature, False, threshold)])

    walk(0, [])
    best = (best_f1, paths[int(best_leaf)])
    conditions = best[1]
    mask = np.ones(len(frame), dtype=bool)
    values = frame.to_numpy()
    for feature, below, threshold in conditions:
        mask &= (values[:, feature] <= threshold) if below else (values[:, feature] > threshold)
    hits = mask & member
    precision = float(hits.sum() / mask.sum()) if mask.sum() else 0.0
    recall = float(hits.sum() / member.sum()) if member.sum() else 0.0
    return _rule_text(conditions, names), round(precision, 3), round(recall, 3)


def _rule_text(conditions, names) -> str:
    bounds: dict[str, list[float | None]] = {}
    for feature, below, threshold in conditions:
        low, high = bounds.setdefault(names[feature], [None, None])
        if below:
            bounds[names[feature]][1] = threshold if high is None else min(high, threshold)
        else:
            bounds[names[feature]][0] = threshold if low is None else max(low, threshold)
    parts = []
    for name, (low, high) in bounds.items():
        if "=" in name:  # a one-hot column: > 0.5 means "is", ≤ 0.5 "is not"
            column, _, level = name.partition("=")
            parts.append(f"{column} is {level}" if low is not None else f"{column} is not {level}")
        elif low is not None and high is not None:
            parts.append(f"{_num(low)} < {name} ≤ {_num(high)}")
        elif low is not None:
            parts.append(f"{name} > {_num(low)}")
        else:
            parts.append(f"{name} ≤ {_num(high)}")
    return " and ".join(parts) if parts else "every customer"


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


# --- names ---------------------------------------------------------------------------------

# Canonical features in a marketer's words (for names; tables keep the column names).
_WORDS = {
    "recency_days": "recency", "frequency": "order count", "monetary": "spend",
    "tenure_days": "tenure", "avg_order_value": "order value",
    "avg_days_between_orders": "time between orders", "n_products": "product range",
}

def _score_against(population: pd.Series, value: float) -> int:
    """Where ``value`` falls among all customers, as a quintile score 1..5."""
    below = float((population < value).mean())
    equal = float((population == value).mean())
    return int(min(5, 1 + np.floor((below + equal / 2) * 5)))


def _level_shares(features: pd.DataFrame, labels: np.ndarray, categorical: list[str]) -> dict[int, list[tuple]]:
    """Per segment, the category level most over-represented in it for each categorical column
    (when one is): ``(column, level, share in the segment, share among all customers)``, the
    largest lift (segment share / overall share) first."""
    found: dict[int, list[tuple]] = {}
    for column in categorical:
        values = features[column].astype("string").fillna("missing").to_numpy(dtype=object)
        overall = pd.Series(values).value_counts(normalize=True)
        shares = pd.crosstab(labels, values, normalize="index")
        for segment, row in shares.iterrows():
            lift = row / overall.reindex(row.index)
            level = lift.idxmax()  # ties: the first level in sorted order
            levels = found.setdefault(int(segment), [])
            if lift[level] > 1 + 1e-9:  # a level as common here as everywhere says nothing
                levels.append((column, str(level), float(row[level]), float(overall[level])))
    for levels in found.values():
        levels.sort(key=lambda item: -item[2] / item[3])
    return found


def _category_name(levels: list[tuple]) -> tuple[str, str]:
    """A name and description from the two most over-represented category levels of a segment
    (``"Plan pro, region north"``, ``"plan pro: 90% of the segment, 33% overall, ..."``)."""
    words = [f"{column} {level}" for column, level, _, _ in levels[:2]]
    name = ", ".join([words[0][0].upper() + words[0][1:]] + words[1:])
    description = ", ".join(f"{column} {level}: {share:.0%} of the segment, {overall:.0%} overall"
                            for column, level, share, overall in levels[:3])
    return name, description


def _name(profiles: list[dict], features, labels, medians, means, z, levels: dict[int, list[tuple]]) -> None:
    has_rfm = all(c in features for c in _RFM)
    for p in profiles:
        segment = p["segment"]
        if segment == -1:
            p["name"], p["description"] = "Outliers", "customers no segment fits (noise)"
            continue
        if has_rfm:
            med = medians.loc[segment]
            r = 6 - _score_against(features["recency_days"], med["recency_days"])
            f = _score_against(features["frequency"], med["frequency"])
            m = _score_against(features["monetary"], med["monetary"])
            code = f"{r}{f}{m}"
            p["name"] = next(s for pattern, s in rfm.DEFAULT_SEGMENT_MAP if re.fullmatch(pattern, code))
            spend = means.loc[segment, "monetary"] / features["monetary"].mean()
            p["description"] = (
                f"bought {med['recency_days']:,.0f} days ago, {med['frequency']:,.0f} "
                f"order{'s' if med['frequency'] != 1 else ''}, spends {spend:.1f}× the average"
            )
        else:
            top = [f for f, _ in p["distinguishing"][:2]]
            words = [("High " if z.loc[segment, f] > 0 else "Low ") + f for f in top]
            if words:
                p["name"] = ", ".join([words[0]] + [w[0].lower() + w[1:] for w in words[1:]])
                p["description"] = ", ".join(f"{f} {lift:.1f}× the average" for f, lift in p["distinguishing"][:3])
            elif levels.get(segment):  # no number sets it apart (e.g. a table of categories only)
                p["name"], p["description"] = _category_name(levels[segment])
            else:
                p["name"], p["description"] = f"Segment {segment}", "no feature sets it apart"
    seen: dict[str, list[dict]] = {}
    for p in profiles:
        seen.setdefault(p["name"], []).append(p)
    for name, group in seen.items():
        if len(group) == 1:
            continue
        for p in group:
            if not p["distinguishing"]:  # named from its categories: the next level tells it apart
                extra = levels.get(p["segment"], [])[2:3]
                if extra:
                    p["name"] = f"{name} ({extra[0][0]} {extra[0][1]})"
                continue
            feature = next((f for f, _ in p["distinguishing"] if f not in _RFM[:2]), p["distinguishing"][0][0])
            word = "high" if z.loc[p["segment"], feature] > 0 else "low"
            p["name"] = f"{name} ({word} {_WORDS.get(feature, feature)})"
    final: dict[str, int] = {}
    for p in profiles:  # still equal (same top feature): number them
        final[p["name"]] = final.get(p["name"], 0) + 1
        if final[p["name"]] > 1:
            p["name"] = f"{p['name']} #{final[p['name']]}"
