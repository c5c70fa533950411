"""The canonical vocabulary and column-role detection.

A *role* is what a column means to custseg (``customer_id``, ``ordered_at``, ...), whatever the
source calls it.  :func:`detect_roles` maps source columns to roles from their names (and
checks the values where names are ambiguous); ``--map ROLE=COLUMN`` overrides it.

>>> detect_roles(["InvoiceNo", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]).roles
{'customer_id': 'CustomerID', 'order_id': 'InvoiceNo', 'ordered_at': 'InvoiceDate', 'quantity': 'Quantity', 'unit_price': 'UnitPrice'}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from custseg.errors import ConfigError, SchemaError

__all__ = [
    "TRANSACTION_ROLES",
    "CUSTOMER_ROLES",
    "ROLES",
    "ColumnMap",
    "detect_roles",
    "parse_mapping",
    "normalise_name",
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

#: Roles that only make sense in a customer table (one row per customer).
CUSTOMER_ROLES: tuple[str, ...] = ("joined_at", "birth_year", "email")

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


def normalise_name(name: str) -> str:
    """Lower-case a column name and drop everything but letters and digits."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@dataclass(frozen=True)
class ColumnMap:
    """Which source column plays which role.

    ``roles`` maps a role to a source column name; ``kind`` says whether the source is a
    transaction log (several rows per customer) or a customer table (one row per customer).
    """

    roles: dict[str, str]
    kind: Kind = "transactions"
    overridden: tuple[str, ...] = field(default=())

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
                f"no column plays the role '{role}'; name one with --map {role}=COLUMN"
            ) from None

    def with_kind(self, kind: Kind) -> ColumnMap:
        return ColumnMap(dict(self.roles), kind, self.overridden)


def parse_mapping(items: Sequence[str] | None) -> dict[str, str]:
    """Parse ``["customer_id=Client", ...]`` (the ``--map`` option) into a dict."""
    mapping: dict[str, str] = {}
    for item in items or ():
        role, sep, column = item.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or not role or not column:
            raise ConfigError(f"--map takes ROLE=COLUMN, got '{item}'; e.g. --map customer_id=Client")
        if role not in ROLES:
            raise ConfigError(
                f"--map role must be one of {', '.join(ROLES)}, got '{role}'"
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
    (:func:`custseg.sources.inspect_table`); here it is a guess from the names: a source with an
    order id or an order date is a transaction log.
    """
    overrides = dict(overrides or {})
    duplicates = sorted({c for c in columns if list(columns).count(c) > 1})
    if duplicates:
        raise SchemaError(
            f"{source} has duplicate column names {duplicates}; rename them so each is unique"
        )
    for role, column in overrides.items():
        if column not in columns:
            raise SchemaError(
                f"--map {role}={column}: {source} has no column '{column}'; "
                f"columns are {', '.join(columns)}"
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
    ordered = {r: roles[r] for r in ROLES if r in roles}
    kind: Kind = "transactions" if ({"order_id", "ordered_at"} & ordered.keys()) else "customers"
    return ColumnMap(ordered, kind, tuple(overrides))
