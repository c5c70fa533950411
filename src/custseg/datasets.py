"""Data to try custseg on.

This module holds bundled sample data and a synthetic generator with planted segments.

Synthetic generator
-------------------
:func:`make_customers` draws a customer feature table (one row per customer, the canonical
columns ``recency_days, frequency, monetary, tenure_days, avg_order_value``) from a few
customer *archetypes* -- champions, at-risk, new, lost, loyal, big spenders -- each with its
own log-normal / Poisson distributions, and returns the true segment of every customer.
:func:`make_transactions` expands the same customers into a transaction log with the
canonical columns ``customer_id, order_id, ordered_at, product_id, quantity, unit_price``.
Both are vectorised and reproducible through ``random_state``.

>>> customers, segments = make_customers(100, n_segments=3, random_state=1)
>>> list(customers.columns)
['customer_id', 'recency_days', 'frequency', 'monetary', 'tenure_days', 'avg_order_value']
>>> [CUSTOMER_ARCHETYPES[s] for s in sorted(set(segments))]
['champions', 'at_risk', 'new']
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from custseg.errors import ConfigError

__all__ = [
    "CUSTOMER_ARCHETYPES",
    "make_customers",
    "make_transactions",
    "sample_path",
]


# ---------------------------------------------------------------------------------------------
# Bundled sample
# ---------------------------------------------------------------------------------------------

def sample_path() -> Path:
    """Path of the bundled sample: about 1 in 5 customers of UCI Online Retail (CC BY 4.0),
    79,780 transactions with the original columns; see ``custseg/data/README.md``."""
    return Path(__file__).with_name("data") / "online_retail_sample.parquet"


# ---------------------------------------------------------------------------------------------
# Synthetic generator with planted segments
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Archetype:
    """Medians (log-normal centres) of one planted customer segment."""

    name: str
    weight: float  # relative share of customers
    recency: float  # days since the last order
    repeat: float  # mean number of orders after the first (Poisson rate, itself log-normal)
    order_value: float  # average order value, in currency units
    span: float  # days between first and last order, for customers with 2+ orders


# The order matters: ``n_segments=k`` plants the first k archetypes.  The first four differ in
# recency, order count and tenure by several within-segment spreads in log space, so
# log1p + standard scaling + K-Means recovers them.
_ARCHETYPES: tuple[_Archetype, ...] = (
    _Archetype("champions", weight=0.20, recency=8, repeat=18.0, order_value=110.0, span=650),
    _Archetype("at_risk", weight=0.22, recency=320, repeat=5.0, order_value=70.0, span=450),
    _Archetype("new", weight=0.25, recency=25, repeat=0.3, order_value=40.0, span=30),
    _Archetype("lost", weight=0.33, recency=650, repeat=0.15, order_value=25.0, span=30),
    _Archetype("loyal", weight=0.22, recency=45, repeat=5.0, order_value=38.0, span=480),
    _Archetype("big_spenders", weight=0.10, recency=70, repeat=1.5, order_value=480.0, span=110),
)

#: Names of the planted segments; label ``i`` returned by :func:`make_customers` is
#: ``CUSTOMER_ARCHETYPES[i]``.
CUSTOMER_ARCHETYPES: tuple[str, ...] = tuple(a.name for a in _ARCHETYPES)

# Spread of each archetype around its medians, in natural-log units, at separation=1.
_SIGMA_DAYS = 0.35
_SIGMA_REPEAT = 0.30
_SIGMA_VALUE = 0.35

_DEFAULT_START = "2022-01-01"
_DEFAULT_END = "2024-12-31"
_DEFAULT_HORIZON_DAYS = 1095  # days from _DEFAULT_START to _DEFAULT_END


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer, got {value!r}; pass a whole number")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be {bound}, got {value}; choose a value {bound}")
    return int(value)


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ConfigError(f"{name} must be a number, got {value!r}; pass e.g. 1.0")
    if not np.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number, got {value}; pass e.g. 1.0")
    return float(value)


def _draw_customers(
    n_customers: int,
    n_segments: int,
    separation: float,
    horizon_days: int,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, np.ndarray]:
    archetypes = _ARCHETYPES[:n_segments]
    weights = np.array([a.weight for a in archetypes])
    # Fixed sizes rather than multinomial noise: every segment gets one customer, the rest
    # is shared by weight with the largest-remainder method.
    quota = weights / weights.sum() * (n_customers - n_segments)
    sizes = 1 + np.floor(quota).astype(np.int64)
    short = n_customers - int(sizes.sum())
    sizes[np.argsort(-(quota - np.floor(quota)), kind="stable")[:short]] += 1
    labels = np.repeat(np.arange(n_segments), sizes)
    rng.shuffle(labels)

    def lognormal(medians: np.ndarray, sigma: float) -> np.ndarray:
        return np.exp(np.log(medians[labels]) + rng.normal(0.0, sigma / separation, labels.size))

    recency_med = np.array([a.recency for a in archetypes], dtype=float)
    repeat_med = np.array([a.repeat for a in archetypes], dtype=float)
    value_med = np.array([a.order_value for a in archetypes], dtype=float)
    span_med = np.array([a.span for a in archetypes], dtype=float)

    recency = np.floor(lognormal(recency_med, _SIGMA_DAYS)).astype(np.int64)
    recency = np.minimum(recency, horizon_days)
    frequency = 1 + rng.poisson(lognormal(repeat_med, _SIGMA_REPEAT))
    span = np.floor(lognormal(span_med, _SIGMA_DAYS)).astype(np.int64)
    span = np.where(frequency > 1, span, 0)  # one order: first order == last order
    tenure = np.minimum(recency + span, horizon_days)
    order_value = lognormal(value_med, _SIGMA_VALUE)
    monetary = np.maximum(np.round(order_value * frequency, 2), 0.01)

    width = max(6, len(str(n_customers)))
    table = pd.DataFrame(
        {
            "customer_id": [f"C{i:0{width}d}" for i in range(1, n_customers + 1)],
            "recency_days": recency,
            "frequency": frequency.astype(np.int64),
            "monetary": monetary,
            "tenure_days": tenure,
            "avg_order_value": monetary / frequency,
        }
    )
    return table, labels.astype(np.int64)


def make_customers(
    n_customers: int = 2000,
    *,
    n_segments: int = 4,
    random_state: int | None = 0,
    separation: float = 1.0,
    horizon_days: int = _DEFAULT_HORIZON_DAYS,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Draw a customer feature table with planted segments.

    Returns ``(customers, labels)``: ``customers`` has one row per customer with columns
    ``customer_id`` (str, ``C000001``...), ``recency_days`` (int, days since the last order),
    ``frequency`` (int >= 1, number of orders), ``monetary`` (float > 0, total spend rounded
    to cents), ``tenure_days`` (int, days since the first order, >= ``recency_days``; equal
    to it for one-order customers) and ``avg_order_value`` (``monetary / frequency``);
    ``labels`` is an int array, ``labels[i]`` the planted segment of row ``i``, named by
    ``CUSTOMER_ARCHETYPES[labels[i]]``.

    Segment ``j`` is the archetype ``CUSTOMER_ARCHETYPES[j]`` (champions, at_risk, new,
    lost, loyal, big_spenders): recency, order value and active span are log-normal around
    the archetype's medians, the number of repeat orders is Poisson with a log-normal rate.
    Segment sizes are fixed shares of ``n_customers`` (rows are shuffled).

    Parameters
    ----------
    n_customers:
        Number of rows, at least ``n_segments``.
    n_segments:
        Number of planted segments, 1 to 6.  The first four are separated well enough for
        ``log1p`` + standard scaling + K-Means to recover them; loyal and big spenders
        overlap more with the others.
    random_state:
        Seed; the same seed gives the same table.
    separation:
        Divides the within-segment spread (in log units); above 1 makes segments tighter and
        easier to recover, below 1 makes them overlap.
    horizon_days:
        Length of the observation window: no recency or tenure exceeds it.

    Example
    -------
    >>> customers, labels = make_customers(500, random_state=0)
    >>> bool((customers["tenure_days"] >= customers["recency_days"]).all())
    True
    """
    n_segments = _check_int("n_segments", n_segments, 1, len(_ARCHETYPES))
    n_customers = _check_int("n_customers", n_customers, n_segments)
    horizon_days = _check_int("horizon_days", horizon_days, 1)
    separation = _check_positive("separation", separation)
    rng = np.random.default_rng(random_state)
    return _draw_customers(n_customers, n_segments, separation, horizon_days, rng)


def _parse_day(name: str, value: object) -> np.datetime64:
    try:
        day = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name} must be a date, got {value!r}; pass e.g. '2024-12-31'"
        ) from None
    if pd.isna(day):
        raise ConfigError(f"{name} must be a date, got {value!r}; pass e.g. '2024-12-31'")
    return np.datetime64(day.normalize().tz_localize(None).to_datetime64(), "D")


def make_transactions(
    n_customers: int = 1000,
    *,
    start: str | _dt.date = _DEFAULT_START,
    end: str | _dt.date = _DEFAULT_END,
    n_segments: int = 4,
    random_state: int | None = 0,
    separation: float = 1.0,
) -> pd.DataFrame:
    """Draw a transaction log whose customers carry planted segments.

    Returns one row per order line with columns ``customer_id`` (str), ``order_id`` (str,
    numbered in time order), ``ordered_at`` (datetime64, between ``start`` and the end of
    day ``end``), ``product_id`` (str, from a catalogue of 500 products with fixed prices),
    ``quantity`` (int >= 1) and ``unit_price`` (float > 0), sorted by ``ordered_at``.

    The customers are exactly those of ``make_customers(n_customers, n_segments=...,
    random_state=..., separation=..., horizon_days=(end - start).days)``: a customer has
    ``frequency`` orders, the first on calendar day ``end - tenure_days`` and the last on
    day ``end - recency_days``; so the planted labels come from that call.  Spend per
    customer is close to ``monetary`` (each order line buys a catalogue product near the
    amount drawn for it) but not equal to it, because prices come from the catalogue.

    Example
    -------
    >>> log = make_transactions(200, random_state=0)
    >>> customers, labels = make_customers(200, random_state=0)
    >>> orders = log.groupby("customer_id")["order_id"].nunique()
    >>> bool((orders.loc[customers["customer_id"]].to_numpy() == customers["frequency"]).all())
    True
    """
    first_day = _parse_day("start", start)
    last_day = _parse_day("end", end)
    horizon = int((last_day - first_day).astype(np.int64))
    if horizon < 1:
        raise ConfigError(
            f"end must be after start, got start={str(first_day)} end={str(last_day)}; "
            "pass a later end date"
        )
    customers, _ = make_customers(
        n_customers,
        n_segments=n_segments,
        random_state=random_state,
        separation=separation,
        horizon_days=horizon,
    )
    # A separate stream, so the customers stay identical to make_customers' ones.
    rng = np.random.default_rng(
        np.random.SeedSequence(random_state).spawn(1)[0] if random_state is not None else None
    )

    frequency = customers["frequency"].to_numpy()
    recency = customers["recency_days"].to_numpy()
    tenure = customers["tenure_days"].to_numpy()
    order_value = customers["avg_order_value"].to_numpy()

    # Orders: the first at tenure, the last at recency, the others uniform in between.
    n_orders = int(frequency.sum())
    owner = np.repeat(np.arange(len(customers)), frequency)
    rank = np.arange(n_orders) - np.repeat(np.cumsum(frequency) - frequency, frequency)
    days_ago = recency[owner] + np.floor(
        rng.random(n_orders) * (tenure[owner] - recency[owner] + 1)
    ).astype(np.int64)
    is_first = rank == 0
    is_last = rank == frequency[owner] - 1
    days_ago = np.where(is_first, tenure[owner], days_ago)
    days_ago = np.where(is_last & ~is_first, recency[owner], days_ago)
    seconds = rng.integers(8 * 3600, 22 * 3600, n_orders)  # shop hours
    ordered_at = (
        (last_day - days_ago.astype("timedelta64[D]")).astype("datetime64[s]")
        + seconds.astype("timedelta64[s]")
    )
    order_amount = order_value[owner] * np.exp(rng.normal(0.0, 0.25, n_orders))

    # Order lines: split each order's amount over 1 + Poisson lines.
    n_lines = 1 + rng.poisson(1.5, n_orders)
    line_order = np.repeat(np.arange(n_orders), n_lines)
    share = rng.gamma(2.0, 1.0, line_order.size)
    share /= np.bincount(line_order, weights=share, minlength=n_orders)[line_order]
    line_amount = order_amount[line_order] * share

    # Catalogue with fixed prices; each line picks a product priced near its amount / qty.
    prices = np.sort(np.round(np.exp(rng.normal(np.log(12.0), 1.0, 500)), 2))
    prices = np.maximum(prices, 0.5)
    wanted_qty = 1 + rng.poisson(0.8, line_order.size)
    pick = np.searchsorted(prices, line_amount / wanted_qty)
    pick = np.clip(pick + rng.integers(-2, 3, line_order.size), 0, prices.size - 1)
    unit_price = prices[pick]
    quantity = np.maximum(1, np.rint(line_amount / unit_price)).astype(np.int64)

    # Number orders in time order, as a shop system would.
    order_sequence = np.empty(n_orders, dtype=np.int64)
    order_sequence[np.argsort(ordered_at, kind="stable")] = np.arange(1, n_orders + 1)
    id_width = max(7, len(str(n_orders)))
    order_ids = np.char.add("O", np.char.zfill(order_sequence.astype(str), id_width))
    product_ids = np.char.add("P", np.char.zfill(np.arange(1, 501).astype(str), 4))
    customer_ids = customers["customer_id"].to_numpy(dtype=str)

    log = pd.DataFrame(
        {
            "customer_id": customer_ids[owner][line_order],
            "order_id": order_ids[line_order],
            "ordered_at": ordered_at[line_order],
            "product_id": product_ids[pick],
            "quantity": quantity,
            "unit_price": unit_price,
        }
    )
    log = log.sort_values(["ordered_at", "order_id"], kind="stable", ignore_index=True)
    for column in ("customer_id", "order_id", "product_id"):
        log[column] = log[column].astype(str)
    return log
