"""Turn the customer feature table into the matrix the clustering algorithms take.

:func:`build_preprocessor` looks at a customer table (one row per ``customer_id``), decides
which columns to use and how to treat each one, reports every decision in plain language,
and returns a :class:`Preprocessor` holding a scikit-learn ``ColumnTransformer``: numeric
columns are median-imputed, skewed ones log1p- or Yeo-Johnson-transformed, then scaled;
0/1 flags are imputed with their most frequent value and stay 0/1; categorical columns are
imputed with their most frequent value and one-hot encoded.  The output is a pandas
DataFrame with readable column names (``monetary``, ``country_UK``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    PowerTransformer,
    RobustScaler,
    StandardScaler,
)
from sklearn.utils.validation import check_is_fitted

from custseg.errors import ConfigError, DataError, ModelError, SchemaError

__all__ = [
    "ID_COLUMN",
    "TRANSACTION_FEATURES",
    "Preprocessor",
    "build_preprocessor",
    "default_feature_columns",
]

#: The customer identifier: carried along, never a feature.
ID_COLUMN = "customer_id"

#: Features computed from a transaction log, in this order.
TRANSACTION_FEATURES = ("recency_days", "frequency", "monetary", "tenure_days", "avg_order_value")

_NUMERIC_OBJECT_KINDS = {"integer", "floating", "mixed-integer-float", "decimal"}
_TEMPORAL_OBJECT_KINDS = {"datetime", "datetime64", "date", "time", "timedelta", "timedelta64", "period"}
_SCALERS = {"standard": "standard scaling (mean 0, standard deviation 1)", "robust": "robust scaling (median 0, IQR 1)"}

#: How a numeric column is transformed before scaling; ``"flag"``: a 0/1 flag, left as it is.
_Transform = Literal["log1p", "yeo_johnson", "none", "flag"]


# -- column kinds ------------------------------------------------------------------------


def _column_kind(name: object, series: pd.Series) -> Literal["id", "temporal", "numeric", "categorical", "other"]:
    dtype = series.dtype
    if name == ID_COLUMN:
        return "id"
    if (
        pd.api.types.is_datetime64_any_dtype(dtype)
        or pd.api.types.is_timedelta64_dtype(dtype)
        or isinstance(dtype, pd.PeriodDtype)
    ):
        return "temporal"
    if pd.api.types.is_bool_dtype(dtype):
        return "numeric"
    if pd.api.types.is_numeric_dtype(dtype):
        return "other" if pd.api.types.is_complex_dtype(dtype) else "numeric"
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype) or dtype == object:
        inferred = pd.api.types.infer_dtype(series, skipna=True)
        if inferred in _TEMPORAL_OBJECT_KINDS:
            return "temporal"
        if inferred in _NUMERIC_OBJECT_KINDS and not isinstance(dtype, pd.CategoricalDtype):
            return "numeric"
        return "categorical"
    return "other"


def _usable_columns(features: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """Usable feature columns in frame order, and the kind of every column."""
    kinds = {column: _column_kind(column, features[column]) for column in features.columns}
    usable = [column for column, kind in kinds.items() if kind in ("numeric", "categorical")]
    return usable, kinds


def default_feature_columns(features: pd.DataFrame, *, kind: Literal["transactions", "customers"]) -> list[str]:
    """Columns of ``features`` to cluster on by default.

    ``features`` is a customer table, one row per ``customer_id``.  For ``kind=
    "transactions"`` (features computed from a transaction log) the result is those of
    ``recency_days, frequency, monetary, tenure_days, avg_order_value`` that are present;
    for ``kind="customers"`` (a CRM/customer attribute table) every numeric or categorical
    column except ``customer_id`` and date/time columns, in frame order.

    >>> import pandas as pd
    >>> table = pd.DataFrame({"customer_id": [1, 2], "frequency": [3, 1], "monetary": [9.0, 2.0],
    ...                       "first_order_at": pd.to_datetime(["2024-01-01", "2024-02-01"])})
    >>> default_feature_columns(table, kind="transactions")
    ['frequency', 'monetary']
    """
    _check_frame(features)
    if kind == "transactions":
        return [column for column in TRANSACTION_FEATURES if column in features.columns]
    if kind == "customers":
        return _usable_columns(features)[0]
    raise ConfigError(f"kind must be one of 'transactions', 'customers', got {kind!r}")


# -- the transformer's building blocks (module level so a fitted transformer pickles) ---


def _to_float(X: pd.DataFrame) -> pd.DataFrame:
    """Numeric columns as float64 (booleans, nullable integers, decimals included)."""
    return X.astype("float64")


def _to_text(X: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as text, missing values as NaN (one type per column for the encoder)."""
    return X.astype(str).astype(object).where(X.notna(), np.nan)


def _scaler(scaler: str):
    return StandardScaler() if scaler == "standard" else RobustScaler()


def _numeric_pipeline(transform: _Transform, scaler: str) -> Pipeline:
    steps: list[tuple[str, Any]] = [
        ("to_float", FunctionTransformer(_to_float, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="most_frequent" if transform == "flag" else "median")),
    ]
    if transform == "flag":
        return Pipeline(steps)
    if transform == "log1p":
        steps.append(("log1p", FunctionTransformer(np.log1p, inverse_func=np.expm1, feature_names_out="one-to-one")))
    elif transform == "yeo_johnson":
        steps.append(("yeo_johnson", PowerTransformer(method="yeo-johnson", standardize=False)))
    steps.append(("scale", _scaler(scaler)))
    return Pipeline(steps)


def _categorical_pipeline(one_hot: bool) -> Pipeline:
    steps: list[tuple[str, Any]] = [
        ("to_text", FunctionTransformer(_to_text, feature_names_out="one-to-one")),
        ("impute", SimpleImputer(strategy="most_frequent")),
    ]
    if one_hot:
        steps.append(("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)))
    return Pipeline(steps)


# -- the result ---------------------------------------------------------------------------


@dataclass
class Preprocessor:
    """A ColumnTransformer plus the decisions that shaped it.

    Attributes
    ----------
    transformer : sklearn.compose.ColumnTransformer
        Unfitted until :meth:`fit` / :meth:`fit_transform`; outputs pandas DataFrames.
        Output columns: the numeric columns (grouped log1p, Yeo-Johnson, untransformed),
        then the one-hot columns ``<column>_<value>``.
    numeric : list of str
        Numeric input columns used, in input order.
    categorical : list of str
        Categorical input columns used, in input order.
    report : list of str
        One plain-language sentence per decision (excluded, dropped, imputed, transformed,
        encoded, scaled).
    records : list of dict
        The same decisions, structured: ``column`` (None for table-wide decisions),
        ``action`` (``exclude``, ``drop_constant``, ``drop_correlated``, ``impute``,
        ``log1p``, ``yeo_johnson``, ``keep_flag``, ``one_hot``, ``keep_categorical``, ``scale``),
        ``reason`` (short text) and ``details`` (numbers behind it).
    """

    transformer: ColumnTransformer
    numeric: list[str]
    categorical: list[str]
    report: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """Input columns used: ``numeric + categorical``."""
        return [*self.numeric, *self.categorical]

    @property
    def is_fitted(self) -> bool:
        try:
            check_is_fitted(self.transformer)
        except NotFittedError:
            return False
        return True

    @property
    def feature_names_out(self) -> list[str]:
        """Output column names (after fitting)."""
        self._require_fitted()
        return [str(name) for name in self.transformer.get_feature_names_out()]

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise ModelError("the preprocessor is not fitted yet; call fit(features) or fit_transform(features) first")

    def _check_input(self, features: pd.DataFrame) -> None:
        _check_frame(features)
        missing = [column for column in self.columns if column not in features.columns]
        if missing:
            raise SchemaError(
                f"features lack column(s) {', '.join(map(repr, missing))} the preprocessor uses; "
                f"pass a table with columns {', '.join(self.columns)}"
            )

    def fit(self, features: pd.DataFrame) -> Preprocessor:
        """Learn medians, transforms, scales and categories from ``features``; return self."""
        self._check_input(features)
        self.transformer.fit(features)
        return self

    def fit_transform(self, features: pd.DataFrame) -> pd.DataFrame:
        """Fit on ``features`` and return the matrix: one row per input row, same index."""
        self._check_input(features)
        return self.transformer.fit_transform(features)

    def transform(self, features: pd.DataFrame) -> pd.DataFrame:
        """Transform ``features`` with what was learned at fit: one row per input row, same index.

        Categories unseen at fit time become all-zero one-hot columns.
        """
        self._require_fitted()
        self._check_input(features)
        return self.transformer.transform(features)


# -- building it --------------------------------------------------------------------------


def _check_frame(features: object) -> None:
    if not isinstance(features, pd.DataFrame):
        raise SchemaError(
            f"features must be a pandas DataFrame with one row per customer, got {type(features).__name__}; "
            "compute the customer features first"
        )


def _check_options(skew_threshold, scaler, corr_threshold, variance_threshold) -> None:
    problems = []
    if not isinstance(skew_threshold, (int, float)) or isinstance(skew_threshold, bool) or not skew_threshold >= 0:
        problems.append(f"skew_threshold must be a number >= 0, got {skew_threshold!r}")
    if scaler not in _SCALERS:
        problems.append(f"scaler must be one of 'standard', 'robust', got {scaler!r}")
    if not isinstance(corr_threshold, (int, float)) or isinstance(corr_threshold, bool) or not 0 < corr_threshold <= 1:
        problems.append(f"corr_threshold must be in (0, 1], got {corr_threshold!r} (1 keeps all but exact duplicates)")
    if (
        not isinstance(variance_threshold, (int, float))
        or isinstance(variance_threshold, bool)
        or not variance_threshold >= 0
    ):
        problems.append(f"variance_threshold must be a number >= 0, got {variance_threshold!r}")
    if problems:
        raise ConfigError("; ".join(problems))


def _fmt(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


class _Log:
    def __init__(self) -> None:
        self.report: list[str] = []
        self.records: list[dict[str, Any]] = []

    def add(self, column: str | None, action: str, reason: str, sentence: str, **details: Any) -> None:
        self.records.append({"column": column, "action": action, "reason": reason, "details": details})
        self.report.append(sentence)


def _constant_reason(series: pd.Series, kind: str, variance_threshold: float) -> tuple[str, dict] | None:
    """Why ``series`` is (near-)constant, or None if it is not."""
    values = series.dropna()
    if values.empty:
        return "all values missing", {"n_rows": int(series.size)}
    if kind == "categorical":
        if values.nunique() == 1:
            value = str(values.iloc[0])
            return f"one value ({value!r}) in every non-missing row", {"value": value}
        return None
    numbers = values.astype("float64").to_numpy()
    if numbers.min() == numbers.max():
        return f"one value ({_fmt(float(numbers[0]))}) in every non-missing row", {"value": float(numbers[0])}
    scale = float(np.max(np.abs(numbers))) ** 2
    relative_variance = float(np.var(numbers)) / scale
    if relative_variance <= variance_threshold:
        return (
            f"relative variance {relative_variance:.3g} <= {variance_threshold:g}",
            {"relative_variance": relative_variance},
        )
    return None


# -- the decisions, in the order build_preprocessor takes them ----------------------------


def _check_table(features: pd.DataFrame) -> None:
    """Refuse a table with duplicate column names or no rows."""
    if features.columns.duplicated().any():
        duplicated = sorted(set(map(str, features.columns[features.columns.duplicated()])))
        raise SchemaError(f"features has duplicate column names {', '.join(duplicated)}; rename them first")
    if len(features) == 0:
        raise DataError("features has no rows; pass a table with at least one customer")


def _select_columns(
    features: pd.DataFrame,
    columns: Sequence[str] | None,
    usable: list[str],
    kinds: dict[str, str],
    log: _Log,
) -> list[str]:
    """The candidate feature columns: ``columns`` once checked, else every usable column.

    Without ``columns`` the columns left out (identifier, date/time, unsupported dtype) are
    logged as excluded; with ``columns`` an unknown or unusable name is a ConfigError that
    lists the usable ones.
    """
    if columns is not None:
        return _checked_columns(features, columns, usable, kinds)
    for column, kind in kinds.items():
        if kind == "id":
            log.add(column, "exclude", "identifier", f"Excluded {column!r}: customer identifier, not a feature.")
        elif kind == "temporal":
            log.add(column, "exclude", "date/time column", f"Excluded {column!r}: date/time column, not a feature.")
        elif kind == "other":
            log.add(
                column,
                "exclude",
                f"unsupported dtype {features[column].dtype}",
                f"Excluded {column!r}: dtype {features[column].dtype} is neither numeric nor categorical.",
                dtype=str(features[column].dtype),
            )
    return usable


def _checked_columns(
    features: pd.DataFrame, columns: Sequence[str], usable: list[str], kinds: dict[str, str]
) -> list[str]:
    """``columns`` without repeats, in the order given; a ConfigError if one cannot be a feature."""
    if isinstance(columns, str):
        columns = [columns]
    selected = list(dict.fromkeys(columns))
    unknown = [column for column in selected if column not in features.columns]
    unusable = [column for column in selected if column in features.columns and column not in usable]
    problems = []
    if unknown:
        problems.append(f"unknown column(s) {', '.join(map(repr, unknown))} in the feature columns asked for")
    if unusable:
        problems.append(
            "column(s) "
            + ", ".join(f"{column!r} ({kinds[column]})" for column in unusable)
            + " cannot be features"
        )
    if problems:
        raise ConfigError(f"{'; '.join(problems)}; available: {', '.join(map(str, usable)) or 'none'}")
    return selected


def _drop_constant(
    features: pd.DataFrame, selected: list[str], kinds: dict[str, str], variance_threshold: float, log: _Log
) -> list[str]:
    """``selected`` without its (near-)constant columns, each drop logged with its reason."""
    kept = []
    for column in selected:
        why = _constant_reason(features[column], kinds[column], variance_threshold)
        if why is None:
            kept.append(column)
        else:
            reason, details = why
            log.add(column, "drop_constant", reason, f"Dropped {column!r}: constant, {reason}.", **details)
    return kept


def _drop_correlated(
    features: pd.DataFrame, kept: list[str], kinds: dict[str, str], corr_threshold: float, log: _Log
) -> list[str]:
    """The numeric columns of ``kept`` without the later column of each pair with
    ``|Pearson r| > corr_threshold``.

    A column is compared with the columns retained before it (in column order) and dropped,
    logged with the first of them it correlates with, when one exceeds the threshold.
    """
    numeric = [column for column in kept if kinds[column] == "numeric"]
    if len(numeric) <= 1:
        return numeric
    corr = features[numeric].astype("float64").corr()
    retained: list[str] = []
    for column in numeric:
        partner = next(
            (earlier for earlier in retained if abs(corr.at[earlier, column]) > corr_threshold),
            None,
        )
        if partner is None:
            retained.append(column)
            continue
        r = float(corr.at[partner, column])
        log.add(
            column,
            "drop_correlated",
            f"|r| = {abs(r):.3f} > {corr_threshold:g} with {partner!r}",
            f"Dropped {column!r}: Pearson correlation {r:.3f} with {partner!r} "
            f"(|r| > {corr_threshold:g}); kept {partner!r}.",
            correlated_with=partner,
            correlation=r,
        )
    return retained


def _require_columns_left(numeric: list[str], categorical: list[str]) -> None:
    """Refuse to go on when the drops left no feature column."""
    if not numeric and not categorical:
        raise DataError(
            "no usable feature columns left after dropping constant and correlated ones; "
            "pass other columns or lower variance_threshold / raise corr_threshold"
        )


def _flag_columns(features: pd.DataFrame, numeric: list[str]) -> list[str]:
    """The numeric columns that are 0/1 flags (every non-missing value 0 or 1), in column order.

    Flags stay 0/1, like one-hot columns: scaled to unit variance, a rare flag (7% of
    customers) would reach 3.6 and outweigh every continuous feature in the distances.  They
    are imputed with their most frequent value, so they stay 0/1 there too.
    """
    return [
        column for column in numeric
        if set(features[column].dropna().astype("float64").unique()) <= {0.0, 1.0}
    ]


def _impute(
    features: pd.DataFrame, numeric: list[str], categorical: list[str], flags: list[str], log: _Log
) -> None:
    """Log how the missing values of each column will be filled, with the value the fitted
    imputer will compute on this table: the median (numeric columns) or the most frequent
    value (0/1 flags and categorical columns)."""
    for column in [*numeric, *categorical]:
        series = features[column]
        n_missing = int(series.isna().sum())
        if not n_missing:
            continue
        value: Any
        if column in categorical:
            value, strategy = str(series.dropna().astype(str).mode().iloc[0]), "most_frequent"
        elif column in flags:
            value, strategy = float(series.dropna().astype("float64").mode().iloc[0]), "most_frequent"
        else:
            value, strategy = float(series.dropna().astype("float64").median()), "median"
        how = "median" if strategy == "median" else "most frequent value"
        log.add(
            column,
            "impute",
            f"{n_missing} missing, filled with the {how} {_fmt(value)}",
            f"Imputed {column!r}: {n_missing} missing value(s) filled with the {how} {_fmt(value)}.",
            n_missing=n_missing,
            value=value,
            strategy=strategy,
        )


def _choose_transforms(
    features: pd.DataFrame, numeric: list[str], flags: list[str], skew_threshold: float, log: _Log
) -> dict[str, _Transform]:
    """The transform of each numeric column before scaling, the skew transforms logged.

    0/1 flags get ``"flag"`` (left as they are); a column with ``|skew| > skew_threshold``
    and more than two distinct values gets ``"log1p"`` when all its values are >= 0, else
    ``"yeo_johnson"``; the others ``"none"``.
    """
    transform_of: dict[str, _Transform] = {}
    for column in numeric:
        if column in flags:
            transform_of[column] = "flag"
            continue
        transform_of[column] = "none"
        values = features[column].dropna().astype("float64")
        skew = float(values.skew()) if values.size > 2 else float("nan")
        # A column with two values is only shifted and rescaled by any transform, which
        # scaling undoes: leave it alone.
        if not np.isfinite(skew) or abs(skew) <= skew_threshold or values.nunique() <= 2:
            continue
        if float(values.min()) >= 0:
            transform_of[column] = "log1p"
            log.add(
                column,
                "log1p",
                f"skew {skew:.2f}, all values >= 0",
                f"Transformed {column!r} with log1p: skew {skew:.2f} exceeds {skew_threshold:g} "
                "and all values are >= 0.",
                skew=skew,
            )
        else:
            transform_of[column] = "yeo_johnson"
            log.add(
                column,
                "yeo_johnson",
                f"skew {skew:.2f}, has negative values",
                f"Transformed {column!r} with Yeo-Johnson: skew {skew:.2f} exceeds {skew_threshold:g} "
                "and it has negative values.",
                skew=skew,
            )
    return transform_of


def _scale(numeric: list[str], flags: list[str], scaler: str, log: _Log) -> None:
    """Log which numeric columns are scaled, with which scaler: all but the 0/1 flags, which
    are kept unscaled (see :func:`_flag_columns`)."""
    for column in flags:
        log.add(
            column,
            "keep_flag",
            "0/1 flag",
            f"Kept {column!r} as a 0/1 flag, unscaled like a one-hot column, so a rare flag "
            "does not outweigh the other features.",
        )
    scaled = [column for column in numeric if column not in flags]
    if scaled:
        log.add(
            None,
            "scale",
            _SCALERS[scaler],
            f"Scaled {len(scaled)} numeric column(s) with {_SCALERS[scaler]}.",
            scaler=scaler,
            columns=scaled,
        )


def _encode(features: pd.DataFrame, categorical: list[str], one_hot: bool, log: _Log) -> None:
    """Log how each categorical column enters the matrix: one-hot encoded, or kept as text."""
    for column in categorical:
        n_values = int(features[column].nunique())
        if one_hot:
            log.add(
                column,
                "one_hot",
                f"{n_values} values",
                f"One-hot encoded {column!r}: {n_values} values, one 0/1 column each.",
                n_values=n_values,
            )
        else:
            log.add(
                column,
                "keep_categorical",
                f"{n_values} values",
                f"Kept {column!r} as text ({n_values} values) for algorithms that take categories.",
                n_values=n_values,
            )


def _column_transformer(
    numeric: list[str],
    categorical: list[str],
    transform_of: dict[str, _Transform],
    scaler: str,
    one_hot: bool,
) -> ColumnTransformer:
    """The unfitted ColumnTransformer: one numeric pipeline per transform (log1p, Yeo-Johnson,
    none, flag; each in column order), then the categorical one; pandas output."""
    transformers = []
    for group in ("log1p", "yeo_johnson", "none", "flag"):
        group_columns = [column for column in numeric if transform_of[column] == group]
        if group_columns:
            name = "numeric" if group == "none" else group
            transformers.append((name, _numeric_pipeline(group, scaler), group_columns))
    if categorical:
        transformers.append(("categorical", _categorical_pipeline(one_hot), list(categorical)))
    transformer = ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
    transformer.set_output(transform="pandas")
    return transformer


def build_preprocessor(
    features: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    skew_threshold: float = 1.0,
    scaler: Literal["robust", "standard"] = "standard",
    corr_threshold: float = 0.95,
    variance_threshold: float = 1e-8,
    one_hot: bool = True,
) -> Preprocessor:
    """Decide how to turn ``features`` into a clustering matrix and build the transformer.

    ``features`` is a customer table: one row per customer, a ``customer_id`` column (never
    a feature), numeric columns, possibly categorical (object/string/category) columns and
    date/time columns (excluded).  It is not modified.  The decisions are taken on
    ``features`` and reported; the returned :class:`Preprocessor` is not fitted yet
    (call ``fit_transform(features)``).

    Decisions, in order:

    1. Columns: ``columns`` if given, else every numeric and categorical column
       (:func:`default_feature_columns` with ``kind="customers"``).
    2. Near-constant columns are dropped: all values missing, a single distinct value, or
       (numeric) variance divided by the largest squared absolute value at or below
       ``variance_threshold`` - a scale-free test, the same in cents or in dollars.
    3. Of each pair of numeric columns with ``|Pearson r| > corr_threshold`` the later one
       (in column order) is dropped.
    4. Missing values: median (numeric) or most frequent value (0/1 flags and categorical).
    5. Numeric columns with ``|skew| > skew_threshold`` (and more than two distinct values:
       0/1 flags stay as they are) are transformed: ``log1p`` when all values are >= 0,
       Yeo-Johnson otherwise; then all numeric columns are scaled, except 0/1 flags, which
       stay 0/1 like one-hot columns.
    6. Categorical columns are one-hot encoded (unseen categories at transform time give
       all zeros), or kept as imputed text when ``one_hot=False`` (for K-Prototypes).

    Parameters
    ----------
    features : DataFrame
    columns : sequence of str, optional
        Feature columns to use; an unknown name is a ConfigError listing the usable ones.
    skew_threshold : float, default=1.0
    scaler : {"standard", "robust"}, default="standard"
    corr_threshold : float, default=0.95
    variance_threshold : float, default=1e-8
    one_hot : bool, default=True

    Returns
    -------
    Preprocessor

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"customer_id": [1, 2, 3, 4],
    ...                       "monetary": [10.0, 20.0, 30.0, 4000.0],
    ...                       "plan": ["basic"] * 4,
    ...                       "country": ["UK", "FR", "UK", None]})
    >>> prep = build_preprocessor(table)
    >>> prep.report[1]
    "Dropped 'plan': constant, one value ('basic') in every non-missing row."
    >>> list(prep.fit_transform(table).columns)
    ['monetary', 'country_FR', 'country_UK']
    """
    _check_frame(features)
    _check_options(skew_threshold, scaler, corr_threshold, variance_threshold)
    _check_table(features)
    usable, kinds = _usable_columns(features)
    log = _Log()
    selected = _select_columns(features, columns, usable, kinds, log)
    kept = _drop_constant(features, selected, kinds, variance_threshold, log)
    numeric = _drop_correlated(features, kept, kinds, corr_threshold, log)
    categorical = [column for column in kept if kinds[column] == "categorical"]
    _require_columns_left(numeric, categorical)
    flags = _flag_columns(features, numeric)
    _impute(features, numeric, categorical, flags, log)
    transform_of = _choose_transforms(features, numeric, flags, skew_threshold, log)
    _scale(numeric, flags, scaler, log)
    _encode(features, categorical, one_hot, log)
    return Preprocessor(
        transformer=_column_transformer(numeric, categorical, transform_of, scaler, one_hot),
        numeric=numeric,
        categorical=categorical,
        report=log.report,
        records=log.records,
    )
