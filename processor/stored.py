"""How an account's fold state is laid out in storage: a header and rows (projections/fold_state.py
decides which rows a write stores; the stores keep them in account_snapshot and account_month_state)."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from processor.state import (
    BOOK_ROW,
    AccountState,
    MonthState,
    OpenDiscrepancy,
    RemittanceBook,
    book_row,
    month_of_key,
)

# An account is stored as a header and one row per month, so a batch writes the months it changed and
# not the account's whole history. A payer's remittance books have a
# row each too (key "remittance:<id>"): a payer account gains one with every remittance. A row also holds
# the discrepancies about it, open and closed by a person (a finding's key names its month or its
# remittance), so the header does not grow with the findings behind it either. The header keeps
# everything else, and the findings about no row.
UNSPLIT = "_unsplit"  # in AccountState.__dict__: loaded from a whole-account snapshot, to be written split
# in AccountState.__dict__: the rows whose book or findings were loaded from the header (written before
# rows held them): their next write stores them in their rows
ROWS_IN_HEADER = "_rows_in_header"
# in AccountState.__dict__: the header as the store holds it (as loaded, or as the last write stored it),
# so a write whose header did not change stores only its rows. Most events change a month (a bill, a
# payment) and nothing of the header; rewriting it anyway was a third of the server's account writes. The
# bytes themselves, not a digest: comparing them costs nothing next to hashing them (1.4 us for a header
# of 1.2 KB), and the account's estimated size counts them (processor/footprint.py).
STORED_HEADER = "_stored_header"


class RowFindings(msgspec.Struct, kw_only=True, gc=False):
    """The discrepancies of one row (a month or a remittance), stored with it, in the account's order."""

    open: list[OpenDiscrepancy] = msgspec.field(default_factory=list)
    closed: list[OpenDiscrepancy] = msgspec.field(default_factory=list)


_encoder = msgspec.msgpack.Encoder()
_account_decoder = msgspec.msgpack.Decoder(AccountState)
_month_decoder = msgspec.msgpack.Decoder(MonthState)
_findings_decoder = msgspec.msgpack.Decoder(RowFindings)
_book_decoder = msgspec.msgpack.Decoder(RemittanceBook)


def row_keys(state: AccountState) -> list[str]:
    """The keys of all the account's stored rows: its months, then its remittance books."""
    return [*state.months, *map(book_row, state.remittances)]


def _has_row(state: AccountState, key: str) -> bool:
    return key in state.months or (key.startswith(BOOK_ROW) and key[len(BOOK_ROW):] in state.remittances)


def encode_header(state: AccountState) -> bytes:
    """The account without its rows and their findings (a shallow copy: the live state is not touched)."""
    loose: set[str] = set()  # rows some finding is about that the account does not have
    if state.open or state.closed:
        months = state.months  # most findings are about a month: looked up inline
        loose = {row for row in state.finding_rows() if row not in months and not _has_row(state, row)}
    return _encoder.encode(msgspec.structs.replace(
        state, months={}, remittances={},
        open={k: d for k, d in state.open.items() if month_of_key(k) in loose} if loose else {},
        closed={i: d for i, d in state.closed.items() if month_of_key(d.key) in loose} if loose else {},
    ))


def header_to_write(state: AccountState) -> bytes | None:
    """The account's header if the store does not hold exactly it yet, else None (nothing to write).

    It is taken as stored from here on: a failed commit resets the processor's cache (and with it this
    mark), and a batch folded after it is discarded with it."""
    header = encode_header(state)
    if state.__dict__.get(STORED_HEADER) == header:
        return None
    state.__dict__[STORED_HEADER] = header
    return header


def encode_row(month: MonthState | RemittanceBook) -> bytes:
    return _encoder.encode(month)


def findings_by_row(state: AccountState, keys: Iterable[str] | None = None) -> dict[str, RowFindings]:
    """The account's findings about its rows (or about the rows named), by row key (a row with none is
    absent), each in the account's order."""
    out: dict[str, RowFindings] = {}
    for key in state.finding_rows() if keys is None else keys:
        opened, closed = state.open_at(key), state.closed_at(key)
        if (opened or closed) and _has_row(state, key):
            out[key] = RowFindings(open=[state.open[k] for k in opened], closed=[state.closed[i] for i in closed])
    return out


def encode_findings(findings: RowFindings | None) -> bytes | None:
    return None if findings is None else _encoder.encode(findings)


def assemble_account(header: bytes, rows: list[tuple[str, bytes, bytes | None]]) -> AccountState:
    """An account from its header and its rows (key, state, findings), in the order they were added.

    A header that still holds months is a whole-account snapshot written before months had rows of
    their own: it is marked so its next write stores every row. Books and findings a header holds that
    belong in rows were written before rows held them: those rows are marked to be written."""
    state = _account_decoder.decode(header)
    whole = bool(state.months)
    if whole:
        state.__dict__[UNSPLIT] = True
    in_header = set() if whole else {book_row(r) for r in state.remittances}
    for key, raw, _ in rows:
        if key.startswith(BOOK_ROW):
            state.remittances[key[len(BOOK_ROW):]] = _book_decoder.decode(raw)
        else:
            state.months[key] = _month_decoder.decode(raw)
    if not whole:
        scopes = {month_of_key(k) for k in state.open} | {month_of_key(d.key) for d in state.closed.values()}
        in_header.update(k for k in scopes if _has_row(state, k))
        if in_header:
            state.__dict__[ROWS_IN_HEADER] = in_header
    for _, _, findings in rows:
        if findings is not None:
            found = _findings_decoder.decode(findings)
            for d in found.open:
                state.open[d.key] = d
            for d in found.closed:
                state.closed[d.discrepancy_id] = d
    if not whole and not in_header:  # a header of the current layout: what the store holds
        state.__dict__[STORED_HEADER] = bytes(header)  # a store may hand a memoryview
    return state
