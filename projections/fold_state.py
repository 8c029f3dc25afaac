"""How a batch stores an account's fold state: its header and the rows it changed.

An account's rows are its months and, on a payer account, its remittance books (processor/state.py). The
fold marks dirty the months it re-projects (processor/rules/reconcile.py), the books it changes
(remittances.py), and the rows whose findings it opens, changes or closes (lifecycle.py, workflow.py); a
write stores those rows, each with the findings about it, and the header (processor/state.py
``encode_header``), never the account's whole history. A row changed without being marked would go
stale, so in check mode (``LEDGER_CHECK_MONTH_WRITES=1``, which the test suite sets) every write also
encodes every row and its findings and fails on one that changed unmarked, and compares the derived
indexes (unpaid months, waiting books) with a full scan.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from processor.state import (
    BOOK_ROW,
    CLOSED_AT,
    OPEN_AT,
    AccountState,
    MonthState,
    RemittanceBook,
    scan_findings,
    unpaid,
    waiting,
)
from processor.stored import (
    ROWS_IN_HEADER,
    UNSPLIT,
    encode_findings,
    encode_row,
    findings_by_row,
    row_keys,
)

# (account_id, month_key, ordinal, month, the month's findings or None): one row of account_month_state
MonthStateRow = tuple[str, str, int, bytes, bytes | None]


# LEDGER_CHECK_MONTH_WRITES=1 (the test suite sets it): every freeze encodes every month of every account
# it writes and fails if one changed without being marked dirty, i.e. if a month row would go stale.
def check_month_writes() -> bool:
    return os.environ.get("LEDGER_CHECK_MONTH_WRITES", "") not in ("", "0")


_WRITTEN = "_month_bytes"  # in AccountState.__dict__, check mode only: each month as last loaded or written


def changed_months(account: AccountState, dirty: set[str], *, check: bool = False) -> list[MonthStateRow]:
    """The rows a write stores: the months and remittance books the fold marked dirty (every row of a
    whole-account snapshot written before months had rows, and the rows whose book or findings an older
    header held), with their ordinals so a load keeps their order, and each with the findings about it."""
    whole = account.__dict__.pop(UNSPLIT, False)
    from_header: set[str] = account.__dict__.pop(ROWS_IN_HEADER, set())
    if check:
        check_months_marked(account, dirty | from_header, whole)
    if not dirty and not whole and not from_header:
        return []
    keys = row_keys(account) if whole else sorted(dirty | from_header)
    findings = findings_by_row(account, keys) if account.open or account.closed else {}
    rows = []
    for key, ordinal, row in _rows(account, keys):
        rows.append((account.account_id, key, ordinal, encode_row(row), encode_findings(findings.get(key))))
    return rows


def _rows(account: AccountState, keys: Iterable[str]) -> Iterator[tuple[str, int, MonthState | RemittanceBook]]:
    """(key, ordinal, state) of the named rows that exist: months, and remittance books ("remittance:<id>")."""
    months, books = account.months, account.remittances
    month_places = books_places = None
    for key in keys:
        month = months.get(key)
        if month is not None:
            month_places = month_places or _ordinals(account, "_ordinals", months)
            yield key, month_places[key], month
        elif key.startswith(BOOK_ROW) and (book := books.get(key[len(BOOK_ROW):])) is not None:
            books_places = books_places or _ordinals(account, "_book_ordinals", books)
            yield key, books_places[key[len(BOOK_ROW):]], book


def month_ordinals(account: AccountState) -> dict[str, int]:
    """Month key -> its place in ``account.months`` (months are only ever added, at the end)."""
    return _ordinals(account, "_ordinals", account.months)


def _ordinals(account: AccountState, name: str, rows: dict[str, Any]) -> dict[str, int]:
    """Key -> its place in ``rows`` (months and books are only ever added, at the end), kept beside the
    state as ``name``."""
    ordinals: dict[str, int] | None = account.__dict__.get(name)
    if ordinals is None:
        ordinals = account.__dict__[name] = {}
    added = len(rows) - len(ordinals)
    if added:  # rows added since: they are at the end, so read from there (not past all the others)
        newest = list(itertools.islice(reversed(rows), added))
        for i, k in enumerate(reversed(newest), start=len(ordinals)):
            ordinals[k] = i
    return ordinals


def check_months_marked(account: AccountState, dirty: set[str], whole: bool) -> None:
    # the findings indexes first: the rows' findings are read through them
    _check_order(account, OPEN_AT, "the open discrepancies by row")
    _check_order(account, CLOSED_AT, "the closed discrepancies by row")
    written: dict[str, tuple[bytes, bytes | None]] = account.__dict__.setdefault(_WRITTEN, {})
    findings = findings_by_row(account)
    for key, _, row in _rows(account, row_keys(account)):
        raw = (encode_row(row), encode_findings(findings.get(key)))
        if not whole and key not in dirty and written.get(key) != raw:
            raise AssertionError(f"account {account.account_id}: row {key} or its findings changed but it"
                                 " was not marked dirty, so its stored row would be stale")
        written[key] = raw
    _check_index(account, "_unpaid_months", "the months billed and unpaid",
                 lambda: {k for k, m in account.months.items() if unpaid(m)})
    _check_index(account, "_waiting_books", "the remittance books waiting",
                 lambda: {r for r, b in account.remittances.items() if waiting(b)})


def _check_index(account: AccountState, name: str, what: str, scan: Callable[[], set[str]]) -> None:
    """A derived index kept beside the state (if built) must be what a full scan finds."""
    kept = account.__dict__.get(name)
    if kept is not None and kept != (fresh := scan()):
        raise AssertionError(f"account {account.account_id}: the index {name} {sorted(kept)} is not {what}"
                             f" {sorted(fresh)}")


def _check_order(account: AccountState, name: str, what: str) -> None:
    """A findings index (if built) must hold what a full scan finds, in the same order."""
    kept: dict[str, dict[str, None]] | None = account.__dict__.get(name)
    if kept is None:
        return
    fresh = scan_findings(account, name)
    if {row: list(ids) for row, ids in kept.items()} != {row: list(ids) for row, ids in fresh.items()}:
        raise AssertionError(f"account {account.account_id}: the index {name} is not {what}: {kept} != {fresh}")


def remember_loaded_months(account: AccountState) -> None:
    """Check mode: the rows (and their findings) as loaded, which a later write must not change unmarked.
    Rows whose book or findings came from an older header are written anyway, so they are not remembered."""
    if check_month_writes():
        findings = findings_by_row(account)
        stale = account.__dict__.get(ROWS_IN_HEADER, set())
        account.__dict__[_WRITTEN] = {
            key: (encode_row(row), encode_findings(findings.get(key)))
            for key, _, row in _rows(account, row_keys(account))
            if key not in stale}
