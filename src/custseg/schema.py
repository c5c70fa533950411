"""The canonical vocabulary and column-role detection.

A *role* is what a column means to custseg (``customer_id``, ``ordered_at``, ...), whatever the
source calls it.  :func:`detect_roles` maps source columns to roles from their names;
``--map ROLE=COLUMN`` overrides it.

>>> detect_roles(["InvoiceNo", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]).roles
{'customer_id': 'CustomerID', 'order_id': 'InvoiceNo', 'ordered_at': 'InvoiceDate', 'quantity': 'Quantity', 'unit_price': 'UnitPrice'}
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from custseg.errors import ConfigError, SchemaError, literal

__all__ = [
    "TRANSACTION_ROLES",
    "CUSTOMER_ROLES",
    "ROLES",
    "ColumnMap",
    "detect_roles",
    "parse_mapping",
    "normalise_name",
    "duplicate_names",
    "ROW_ID",
    "is_outcome_name",
    "outcome_positive",
    "flag_text",
]

#: Roles of a transaction log, in canonical order.
TRANSACTION_ROLES: tuple[str, ...] = (
    "customer_id",
    "order_id",
    "ordered_at",
    "product_id",
    "quantity",
    "unit_price",
    "amount",
    "country",
    "channel",
)

#: Roles that only make sense in a customer table (one row per customer).  ``outcome`` is a
#: column that records a result (churned, responded, converted) rather than a trait: it is
#: profiled per segment but not clustered on; a table may have several (``ColumnMap.outcomes``).
CUSTOMER_ROLES: tuple[str, ...] = ("joined_at", "birth_year", "email", "outcome")

#: The name of the customer id in every output when a customer table has no id column and its
#: customers are numbered by row (1-based).
ROW_ID = "row"

ROLES: tuple[str, ...] = TRANSACTION_ROLES + CUSTOMER_ROLES

Kind = Literal["transactions", "customers"]

# Normalised names (see normalise_name) that mean a role, most specific first.
_SYNONYMS: dict[str, tuple[str, ...]] = {
    "customer_id": (
        "customerid", "custid", "customerno", "customernumber", "customer", "clientid",
        "client", "userid", "memberid", "accountid", "shopperid", "buyerid",
    ),
    "order_id": (
        "invoiceno", "invoice", "invoiceid", "invoicenumber", "orderid", "orderno",
        "ordernumber", "order", "transactionid", "receiptid", "receiptno", "basketid",
    ),
    "ordered_at": (
        "invoicedate", "orderdate", "orderedat", "purchasedate", "transactiondate",
        "orderdatetime", "date", "datetime", "timestamp", "purchasedat", "createdat",
    ),
    "product_id": (
        "stockcode", "productid", "productcode", "product", "sku", "itemid", "itemcode",
        "item", "articleid",
    ),
    "quantity": ("quantity", "qty", "units", "unitssold", "quantityordered"),
    "unit_price": ("unitprice", "price", "itemprice", "priceeach", "unitcost"),
    "amount": (
        "amount", "total", "sales", "revenue", "totalamount", "ordervalue", "linetotal",
        "totalprice", "spend", "totalspend", "value",
    ),
    "country": ("country", "countryname", "nation"),
    "channel": ("channel", "saleschannel", "orderchannel"),
    "joined_at": (
        "dtcustomer", "customersince", "signupdate", "signedupat", "joindate", "joinedat",
        "registrationdate", "createdon", "firstseen",
    ),
    "birth_year": ("yearbirth", "birthyear", "yearofbirth", "yob"),
    "email": ("email", "emailaddress", "mail"),
}

# A bare "ID" column is the customer id of a customer table only when nothing better exists.
_WEAK_SYNONYMS: dict[str, tuple[str, ...]] = {"customer_id": ("id",)}

# Normalised names of outcome columns: a result of the relationship, not a trait.  Stems match
# the start of a name (``AcceptedCmp3``, ``Attrition_Flag``, ``churn_label``); whole words only
# match the whole name (``left``, ``y``).
_OUTCOME_STEMS = (
    "churn", "attrition", "attrited", "exited", "response", "responded", "converted",
    "conversion", "subscribed", "accepted", "cancelled", "canceled", "defaulted", "retained",
)
_OUTCOME_WORDS = ("left", "y", "exit", "outcome", "target")
# The value that means "yes" in a two-valued outcome column (compared case-insensitively).
_YES = ("1", "1.0", "yes", "y", "true", "t")
_NO = ("0", "0.0", "no", "n", "false", "f")
# Stems of the positive value of a two-valued text outcome ("Attrited Customer" against
# "Existing Customer").
_POSITIVE_STEMS = ("attrit", "churn", "exit", "left", "leav", "respond", "convert", "subscrib",
                   "accept", "cancel", "default", "lost", "closed")


def is_outcome_name(name: str) -> bool:
    """Whether a column name reads like an outcome (churn, response, converted, ``y`` …).

    >>> [is_outcome_name(n) for n in ("Churn", "AcceptedCmp3", "Exited", "y", "Income", "Year")]
    [True, True, True, True, False, False]
    """
    norm = normalise_name(name)
    return norm.startswith(_OUTCOME_STEMS) or norm in _OUTCOME_WORDS


def outcome_positive(values: Iterable[object]) -> str | None:
    """The value meaning "yes" among the distinct non-missing ``values`` of a column named
    like an outcome, as text; None when they are not a yes/no pair.

    A column with values {0, 1}, {yes, no}, {true, false}, {y, n} (or one of each, or only one
    value), or two texts of which exactly one reads as the outcome ("Attrited Customer" /
    "Existing Customer") is an outcome.

    >>> outcome_positive(["No", "Yes"]), outcome_positive([0, 1]), outcome_positive([1, 2])
    ('yes', '1', None)
    >>> outcome_positive(["Existing Customer", "Attrited Customer"])
    'attrited customer'
    """
    texts = {flag_text(v) for v in values}
    if not texts or len(texts) > 2:
        return None
    if texts <= set(_YES) | set(_NO):
        yes = texts & set(_YES)
        if len(yes) > 1 or len(texts - set(_YES)) > 1:
            return None
        return next(iter(yes)) if yes else _YES[_NO.index(next(iter(texts)))]
    if len(texts) != 2:
        return None
    positive = [t for t in texts if any(stem in t for stem in _POSITIVE_STEMS)]
    return positive[0] if len(positive) == 1 else None


def flag_text(value: object) -> str:
    """A value of a yes/no column as the lower-case text :func:`outcome_positive` compares."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().casefold()


def normalise_name(name: str) -> str:
    """Lower-case a column name and drop everything but letters and digits."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


def duplicate_names(names: Iterable[str]) -> list[str]:
    """Column names that clash once case and surrounding spaces are ignored, sorted.

    SQL engines (DuckDB included) treat ``CustomerID`` and ``customerid`` as the same name,
    so such a pair is as much a duplicate as two equal names.

    >>> duplicate_names(["CustomerID", "Amount", "customerid ", "Date"])
    ['CustomerID', 'customerid ']
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(str(name).strip().casefold(), []).append(str(name))
    return sorted({n for group in groups.values() if len(group) > 1 for n in group})


def _suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or nothing."""
    choices = list(choices)
    by_key = {normalise_name(c): c for c in choices}
    close = difflib.get_close_matches(normalise_name(word), list(by_key), n=1, cutoff=0.6)
    return f" (did you mean '{by_key[close[0]]}'?)" if close else ""


@dataclass(frozen=True)
class ColumnMap:
    """Which source column plays which role.

    ``roles`` maps a role to a source column name; ``kind`` says whether the source is a
    transaction log (several rows per customer) or a customer table (one row per customer);
    ``source`` names the source in messages.  ``outcomes`` maps each outcome column to the
    value that means "yes" (as lower-case text).  ``row_ids`` says that the source has no
    customer id column: its customers are numbered by row (1-based) and the id is called
    :data:`ROW_ID` in outputs.
    """

    roles: dict[str, str]
    kind: Kind = "transactions"
    overridden: tuple[str, ...] = field(default=())
    source: str = "the source"
    outcomes: dict[str, str] = field(default_factory=dict)
    row_ids: bool = False

    def get(self, role: str) -> str | None:
        return self.roles.get(role)

    def __contains__(self, role: object) -> bool:
        return role in self.roles

    def column(self, role: str) -> str:
        """The source column for ``role``; SchemaError if the source has none."""
        try:
            return self.roles[role]
        except KeyError:
            raise SchemaError(
                f"{literal(self.source)}: no column plays the role '{role}'; "
                f"name one with {{param}} {role}=COLUMN",
                param="mapping",
            ) from None

    def with_kind(self, kind: Kind) -> ColumnMap:
        return replace(self, roles=dict(self.roles), kind=kind)

    def role_of(self, column: str) -> str:
        """The role of a source column ("" for none)."""
        if column in self.outcomes:
            return "outcome"
        return next((role for role, c in self.roles.items() if c == column), "")


def parse_mapping(items: Sequence[str] | None) -> dict[str, str]:
    """Parse ``["customer_id=Client", ...]`` (the ``--map`` option) into a dict.

    Each role may be given once and each column may play one role.

    >>> parse_mapping(["customer_id=Client", "amount = Total"])
    {'customer_id': 'Client', 'amount': 'Total'}
    """
    mapping: dict[str, str] = {}
    for item in items or ():
        role, sep, column = item.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or not role or not column:
            raise ConfigError(f"{{param}} takes ROLE=COLUMN, got '{literal(item)}'; e.g. {{param}} customer_id=Client",
                              param="mapping")
        if role not in ROLES:
            raise ConfigError(
                f"{{param}} {literal(item)}: unknown role '{literal(role)}'{_suggest(role, ROLES)}; "
                f"the role must be one of {', '.join(ROLES)}",
                param="mapping",
            )
        if role in mapping and mapping[role] != column:
            raise ConfigError(
                f"{{param}} {role} is given twice ('{literal(mapping[role])}' and '{literal(column)}'); keep one",
                param="mapping",
            )
        other = next((r for r, c in mapping.items() if c == column and r != role), None)
        if other is not None:
            raise ConfigError(
                f"{{param}} {role}={literal(column)}: column '{literal(column)}' already plays the role '{other}'; "
                "map each column to one role",
                param="mapping",
            )
        mapping[role] = column
    return mapping


def detect_roles(
    columns: Sequence[str],
    *,
    overrides: Mapping[str, str] | None = None,
    source: str = "the source",
) -> ColumnMap:
    """Map source ``columns`` to roles by name; ``overrides`` (role → column) win.

    The kind (transactions or customers) is decided later from the values
    (:func:`custseg.pipeline.load`); here it is a guess from the names: a source with an
    order id or an order date is a transaction log.  ``outcomes`` holds the columns named like
    an outcome (or the one given with ``--map outcome=COLUMN``), their "yes" value still to be
    read from the values (:func:`outcome_positive`).
    """
    overrides = dict(overrides or {})
    columns = list(columns)
    duplicates = duplicate_names(columns)
    if duplicates:
        raise SchemaError(
            f"{source}: duplicate column names {duplicates} (compared ignoring case); "
            "rename them so each is unique"
        )
    for role, column in overrides.items():
        if column not in columns:
            raise SchemaError(
                f"{{param}} {literal(role)}={literal(column)}: {literal(source)} has no column '{literal(column)}'"
                f"{literal(_suggest(column, columns))}; columns are {literal(', '.join(columns))}",
                param="mapping",
            )
    taken = set(overrides.values())
    roles: dict[str, str] = {}
    normalised = {c: normalise_name(c) for c in columns}
    for table in (_SYNONYMS, _WEAK_SYNONYMS):
        for role, names in table.items():
            if role in roles or role in overrides:
                continue
            for name in names:
                hit = next(
                    (c for c in columns if normalised[c] == name and c not in taken), None
                )
                if hit is not None:
                    roles[role] = hit
                    taken.add(hit)
                    break
    roles.update(overrides)
    if "outcome" in roles:
        outcomes = {roles.pop("outcome"): ""}
    else:
        outcomes = {c: "" for c in columns if c not in taken and is_outcome_name(c)}
    ordered = {r: roles[r] for r in ROLES if r in roles}
    kind: Kind = "transactions" if ({"order_id", "ordered_at"} & ordered.keys()) else "customers"
    return ColumnMap(ordered, kind, tuple(overrides), source, outcomes)
