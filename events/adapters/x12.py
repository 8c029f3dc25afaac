"""X12 through pyx12: the segments of a file with their loop, line and position, and pyx12's errors.

pyx12 knows the implementation guides (005010X220A1, 005010X218): it places every segment in its loop
and validates syntax and code lists. ``X12ContextReader`` reads from a file object, so inputs are
never written to (``x12valid`` would write an acknowledgment beside them).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from typing import Any

from events.adapters.common import IngestError, errors_capped

ISA_LENGTH = 106


@dataclass(frozen=True, slots=True)
class Seg:
    """One segment: ``els[0]`` is element 01. ``loop`` is the innermost loop id (2000, 2300, 2100A,
    header, ...), ``position`` its count within the transaction set, as SE01 counts."""

    id: str
    els: tuple[str, ...]
    line: int
    position: int
    loop: str

    def get(self, n: int) -> str:
        """Element n (1-based), '' when absent."""
        return self.els[n - 1].strip() if 0 < n <= len(self.els) else ""


def sniff_transaction(data: bytes) -> tuple[str, str] | None:
    """(ST01, GS08) of an X12 interchange, from the separators the ISA declares; None if not X12."""
    text = data[:8192].decode("latin-1").lstrip("\ufeff\r\n\t ")
    if not text.startswith("ISA") or len(text) < ISA_LENGTH:
        return None
    ele, seg_term = text[3], text[ISA_LENGTH - 1]
    segments = [s.strip("\r\n ") for s in text.split(seg_term)]
    st = next((s for s in segments if s.startswith(f"ST{ele}")), None)
    gs = next((s for s in segments if s.startswith(f"GS{ele}")), None)
    if st is None:
        return None
    st_els = st.split(ele)
    gs_els = gs.split(ele) if gs else []
    return (st_els[1] if len(st_els) > 1 else "", gs_els[8] if len(gs_els) > 8 else "")


def _loop_of(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    loops = parts[:-1]
    for name in reversed(loops):
        if name[:1].isdigit():
            return name
    if "HEADER" in loops:
        return "header"
    return loops[-1].replace("_LOOP", "") if loops else ""


_TRAILERS = {"isa": ("ISA", "IEA"), "gs": ("GS", "GE"), "st": ("ST", "SE")}


class _Recorder:
    """A pyx12 error handler that records errors with the segment they belong to (and logs nothing)."""

    def __init__(self, path: str, max_errors: int | None = None) -> None:
        import pyx12.error_handler

        self._base = pyx12.error_handler.errh_null()
        self.path = path
        self.max_errors = max_errors
        self.errors: list[IngestError] = []
        self.line: int | None = None
        self.position: int | None = None
        self.segment_id: str | None = None
        self.loop: str | None = None
        self.element: str | None = None
        self.pending: list[tuple[int, int]] = []  # trailer errors whose line is found afterwards

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def _current(self, seg: Any, map_node: Any, seg_count: int | None, line: int | None) -> None:
        self.segment_id = seg.get_seg_id() if seg is not None else None
        self.loop = _loop_of(map_node.get_path()) if map_node is not None else None
        self.position, self.line = seg_count, line

    def add_isa_loop(self, seg: Any, src: Any) -> None:
        self._current(seg, None, None, src.get_cur_line())
        self.loop = "ISA"

    def add_gs_loop(self, seg: Any, src: Any) -> None:
        self._current(seg, None, None, src.get_cur_line())
        self.loop = "GS"

    def add_st_loop(self, seg: Any, src: Any) -> None:
        self._current(seg, None, src.get_seg_count(), src.get_cur_line())
        self.loop = "ST"

    def add_seg(self, map_node: Any, seg: Any, seg_count: int, cur_line: int, ls_id: Any) -> None:
        self._current(seg, map_node, seg_count, cur_line)

    def add_ele(self, map_node: Any) -> None:
        self.element = getattr(map_node, "id", None)

    def _add(self, code: str, reason: str, element: str | None = None, line: int | None = None,
             segment_id: str | None = None) -> None:
        self.errors.append(IngestError(
            file=self.path, reason=reason, line=line or self.line, segment=self.position,
            segment_id=segment_id or self.segment_id, loop=self.loop, element=element, code=code,
        ))
        if self.max_errors is not None and len(self.errors) > self.max_errors:
            raise ErrorCapReached(_dedupe(self.errors))

    def handle_errors(self, err_list: list[Any]) -> None:
        for err_type, code, reason, _value, src_line in err_list:
            if err_type not in _TRAILERS:
                self._add(code, reason, None, src_line)
                continue
            header, trailer = _TRAILERS[err_type]
            seg_id = trailer if trailer in reason else header
            element = f"{trailer}01" if "count" in reason.lower() and seg_id == trailer else None
            # The trailer has no add_seg of its own: its line is filled in from the segment list.
            self.errors.append(IngestError(file=self.path, reason=reason, line=src_line, segment_id=seg_id,
                                           element=element, code=code, loop=None))
            self.pending.append((len(self.errors) - 1, self.line or 0))

    def isa_error(self, code: str, reason: str) -> None:
        self._add(code, reason, segment_id="ISA")

    def gs_error(self, code: str, reason: str) -> None:
        self._add(code, reason, segment_id="GS")

    def st_error(self, code: str, reason: str) -> None:
        self._add(code, reason, segment_id="ST")

    def seg_error(self, code: str, reason: str, value: str | None = None, src_line: int | None = None) -> None:
        self._add(code, reason, line=src_line)

    def ele_error(self, code: str, reason: str, bad_value: str | None, refdes: str | None = None) -> None:
        self._add(code, reason, element=refdes or self.element)

    def close_isa_loop(self, node: Any, seg: Any, src: Any) -> None:
        pass

    def close_gs_loop(self, node: Any, seg: Any, src: Any) -> None:
        pass

    def close_st_loop(self, node: Any, seg: Any, src: Any) -> None:
        pass


class ErrorCapReached(Exception):
    """More errors than the file may have (setting ingest_errors_max): reading stops."""


@dataclass(frozen=True, slots=True)
class Interchange:
    """One ISA...IEA of a file: where it is in the file's text (``start``, ``end``), the number of
    segments before it in the file (pyx12 numbers lines by segment, so a line of this interchange +
    ``offset`` is its line in the file), its own segment count, and how much text after it is not
    another interchange."""

    source: str
    start: int
    end: int
    offset: int
    segments: int
    trailing: int = 0

    @property
    def head(self) -> str:
        return self.source[self.start:self.start + ISA_LENGTH]

    def reader(self) -> _SliceReader:
        return _SliceReader(self.source, self.start, self.end)


class _SliceReader:
    """A read-only text file over part of a string, so pyx12 reads the file without a copy of it
    (``io.StringIO`` would hold four bytes a character)."""

    closed = False

    def __init__(self, source: str, start: int, end: int) -> None:
        self._source, self._at, self._end = source, start, end

    def read(self, size: int = -1) -> str:
        stop = self._end if size is None or size < 0 else min(self._end, self._at + size)
        text = self._source[self._at:stop]
        self._at = stop
        return text

    def close(self) -> None:
        self.closed = True


def segment_stats(text: str, seg_term: str, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """(segments that are not blank, the longest segment's length) of ``text[start:end]``, without
    splitting it into a list (a big file would be held twice)."""
    end = len(text) if end is None else end
    count = longest = 0
    at = start
    while at < end:
        stop = text.find(seg_term, at, end)
        if stop < 0:
            stop = end
        if text[at:stop].strip("\r\n\t "):
            count += 1
            longest = max(longest, stop - at)
        at = stop + 1
    return count, longest


def split_interchanges(text: str) -> list[Interchange]:
    """The interchanges of a file, each with its own separators (ISA04, ISA16 and the character after
    ISA16 declare them). Line breaks between segments are allowed; text after the last IEA that does
    not start another ISA is counted as ``trailing`` of the interchange before it."""
    out: list[Interchange] = []
    at = len(text) - len(text.lstrip("\ufeff\r\n\t "))
    offset = 0
    while at < len(text):
        if not text.startswith("ISA", at) or len(text) - at < ISA_LENGTH:
            if out:
                out[-1] = dataclasses.replace(out[-1], trailing=len(text) - at)
            else:
                count, _ = segment_stats(text, "~", at)
                out.append(Interchange(source=text, start=at, end=len(text), offset=0, segments=count))
            break
        ele, seg_term = text[at + 3], text[at + ISA_LENGTH - 1]
        trailer = re.compile(re.escape(seg_term) + r"[\r\n\t ]*IEA" + re.escape(ele) + "[^" + re.escape(seg_term)
                             + "]*" + re.escape(seg_term)).search(text, at)
        end = trailer.end() if trailer is not None else len(text)
        count, _ = segment_stats(text, seg_term, at, end)
        out.append(Interchange(source=text, start=at, end=end, offset=offset, segments=count))
        offset += count
        at = end
        while at < len(text) and text[at] in "\r\n\t ":
            at += 1
    return out


def read_x12(text: str, path: str, max_errors: int | None = None) -> tuple[list[Seg], list[IngestError]]:
    """Every segment of a file in order, and what pyx12 found wrong (syntax, codes, counts, trailers).

    Each interchange is read on its own (pyx12 counts IEA segments across interchanges, and each may
    declare separators of its own). An interchange pyx12 cannot read is not mapped at all; neither is
    anything when more than ``max_errors`` errors are found (reading stops there)."""
    segs: list[Seg] = []
    errors: list[IngestError] = []
    control_numbers: dict[str, int] = {}
    for chunk in split_interchanges(text):
        isa13 = chunk.head.split(chunk.head[3])[13:14]
        if isa13 and isa13[0] in control_numbers:
            errors.append(IngestError(
                file=path, line=chunk.offset + 1, segment_id="ISA", loop="ISA", element="ISA13", code="025",
                reason=f"interchange control number {isa13[0]} is also the one of the interchange on line"
                f" {control_numbers[isa13[0]]}: ISA13 must be unique within the file"))
        elif isa13:
            control_numbers[isa13[0]] = chunk.offset + 1
        budget = None if max_errors is None else max_errors - len(errors)
        try:
            chunk_segs, chunk_errors = _read_interchange(chunk, path, budget)
        except ErrorCapReached as capped:
            assert max_errors is not None
            found: list[IngestError] = capped.args[0]
            return [], [*_dedupe(errors + found)[:max_errors], errors_capped(path, max_errors, found[-1].line)]
        segs.extend(chunk_segs)
        errors.extend(chunk_errors)
        if chunk.trailing:
            after = chunk.offset + chunk.segments
            errors.append(IngestError(
                file=path, line=after, segment_id="IEA", loop="ISA", code="022",
                reason=f"after the interchange trailer IEA (line {after}) the file goes on with"
                f" {chunk.trailing} characters that are not an X12 interchange (no ISA): they are not read"))
    return segs, _dedupe(errors)


def _read_interchange(chunk: Interchange, path: str, max_errors: int | None) -> tuple[list[Seg], list[IngestError]]:
    import pyx12.errors
    import pyx12.params
    import pyx12.x12context

    params = pyx12.params.params()
    recorder = _Recorder(path, max_errors)
    segs: list[Seg] = []
    errors: list[IngestError] = []
    shift = chunk.offset

    def check_cap() -> None:
        if max_errors is not None and len(errors) + len(recorder.errors) > max_errors:
            raise ErrorCapReached(_dedupe(errors + recorder.errors))

    try:
        with pyx12.x12context.X12ContextReader(params, recorder, chunk.reader()) as reader:
            for node in reader.iter_segments():
                seg = node.seg_data
                if seg is None:
                    continue
                seg_id = seg.get_seg_id() or ""
                els = tuple(e.format() for e in seg.elements)
                map_node = node.x12_map_node
                segs.append(Seg(
                    id=seg_id, els=els, line=node.cur_line_number or 0, position=node.seg_count or 0,
                    loop=_loop_of(map_node.get_path()) if map_node is not None else "",
                ))
                for err in node.errors:  # walker errors (segment not expected here, loop counts)
                    code, reason = (err[0], err[1]) if isinstance(err, tuple) and len(err) >= 2 else ("", str(err))
                    errors.append(IngestError(
                        file=path, reason=str(reason), line=node.cur_line_number, segment=node.seg_count,
                        segment_id=seg_id, loop=segs[-1].loop, code=str(code),
                    ))
                check_cap()
            # pyx12's context reader leaves the check for missing trailers (SE, GE, IEA) to its caller
            reader.src.cleanup()
            recorder.handle_errors(reader.src.pop_errors())
    except ErrorCapReached as capped:
        raise ErrorCapReached([_shift(e, shift) for e in capped.args[0]]) from None
    except Exception as exc:  # pyx12 raises X12Error, EngineError, and on some damage IndexError or KeyError
        # Reading stopped part-way: nothing of the interchange is mapped, so no half-read member is published.
        last = segs[-1] if segs else None
        errors.append(IngestError(
            file=path, reason=f"not a readable X12 interchange; pyx12 stopped after this segment:"
            f" {type(exc).__name__}: {exc}", line=last.line if last else recorder.line,
            segment=last.position if last else None, segment_id=last.id if last else recorder.segment_id,
            loop=last.loop if last else None))
        return [], [_shift(e, shift) for e in _dedupe(errors + recorder.errors)]
    last_line = segs[-1].line if segs else None
    for index, after in recorder.pending:
        e = recorder.errors[index]
        if e.line is None:
            seg = next((s for s in segs if s.id == e.segment_id and s.line > after), None)
            if seg is not None:
                recorder.errors[index] = dataclasses.replace(e, line=seg.line, segment=seg.position or None,
                                                             loop=seg.loop)
            else:  # a trailer that never came: reported where it should have followed
                recorder.errors[index] = dataclasses.replace(e, line=last_line)
    unread = chunk.segments - len(segs)
    if unread > 0 and segs:
        # pyx12 stops without a word at an empty segment, and drops a last segment without terminator
        seg_term = chunk.head[-1]
        why = ("follow an empty segment (two segment terminators with nothing between)"
               if re.compile(re.escape(seg_term) + r"[\r\n]*" + re.escape(seg_term)).search(
                   chunk.source, chunk.start, chunk.end)
               else f"have no segment terminator ({seg_term!r}, declared by the ISA)")
        errors.append(IngestError(
            file=path, line=last_line, segment=segs[-1].position or None, segment_id=segs[-1].id, loop=segs[-1].loop,
            reason=f"reading stopped after this segment: {unread} segments {why} and are not read"))
    segs = [dataclasses.replace(s, line=s.line + shift) for s in segs] if shift else segs
    return segs, [_shift(e, shift) for e in _dedupe(errors + recorder.errors)]


def _shift(e: IngestError, lines: int) -> IngestError:
    return dataclasses.replace(e, line=e.line + lines) if lines and e.line is not None else e


def _dedupe(errors: list[IngestError]) -> list[IngestError]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for e in sorted(errors, key=lambda e: (e.line or 0, e.element or "")):
        k = (e.line, e.element, e.reason)
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


def redact(errors: list[IngestError], secrets: set[str]) -> list[IngestError]:
    """Errors with any SSN of the file replaced, so a reason quoting a bad value cannot leak one."""
    if not secrets:
        return errors
    out = []
    for e in errors:
        reason = e.reason
        for s in secrets:
            if s:
                reason = reason.replace(s, "[redacted]")
        out.append(e if reason == e.reason else IngestError(
            file=e.file, reason=reason, line=e.line, segment=e.segment, segment_id=e.segment_id,
            loop=e.loop, element=e.element, code=e.code))
    return out


# -- large files: the same pyx12 validation on chunks of members, in parallel ------------------------

PARALLEL_MIN_SEGMENTS = 40_000
_ENVELOPE = ("ISA", "GS", "ST", "SE", "GE", "IEA")


def split_raw(text: str) -> tuple[list[str], str]:
    """The segments as sent (terminator removed, surrounding line breaks stripped) and the element
    separator. A segment's index + 1 is its line as pyx12 counts them."""
    stripped = text.lstrip("\ufeff\r\n\t ")
    seg_term, ele = stripped[ISA_LENGTH - 1], stripped[3]
    raw = [s.strip("\r\n") for s in stripped.split(seg_term)]
    return [s for s in raw if s.strip()], ele


def read_x12_parallel(text: str, path: str, workers: int, max_errors: int | None = None
                      ) -> tuple[list[Seg], list[IngestError]]:
    """``read_x12`` for one big transaction set: the members (834 INS, 820 ENT loops) are cut into
    chunks, each wrapped in the file's own header and a trailer that counts it, and validated by pyx12
    in a process pool; lines and positions are mapped back to the file. The real trailers (SE, GE, IEA)
    are checked here: counts and control numbers. Falls back to ``read_x12`` for other shapes."""
    import concurrent.futures
    import multiprocessing

    raw, ele = split_raw(text)
    ids = [r.split(ele, 1)[0] for r in raw]
    if ids.count("ST") != 1 or ids.count("GS") != 1 or ids.count("ISA") != 1 or ids[-3:] != ["SE", "GE", "IEA"]:
        return read_x12(text, path, max_errors)
    st_at, se_at = ids.index("ST"), len(ids) - 3
    member = "INS" if "INS" in ids else "ENT"
    starts = [i for i in range(st_at, se_at) if ids[i] == member]
    if len(starts) < 2 * workers:
        return read_x12(text, path, max_errors)
    first = starts[0]
    header = raw[:first]
    per = max(1, len(starts) // (workers * 2))
    cuts = [*starts[::per], se_at]
    cuts = sorted(set(cuts))
    st_els, gs_els, isa_els = raw[st_at].split(ele), raw[ids.index("GS")].split(ele), raw[0].split(ele)
    st02 = st_els[2] if len(st_els) > 2 else ""
    gs06 = gs_els[6] if len(gs_els) > 6 else ""
    isa13 = isa_els[13] if len(isa_els) > 13 else ""
    jobs = []
    for a, b in itertools.pairwise(cuts):
        body = raw[a:b]
        count = (first - st_at) + len(body) + 1
        chunk = [*header, *body, f"SE{ele}{count}{ele}{st02}", f"GE{ele}1{ele}{gs06}", f"IEA{ele}1{ele}{isa13}"]
        jobs.append((a, len(body), "~\n".join(c.replace("~", " ") for c in chunk) + "~\n" if ele != "~"
                     else None))
    if any(j[2] is None for j in jobs):
        return read_x12(text, path, max_errors)
    segs: list[Seg] = []
    errors: list[IngestError] = []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        results = list(pool.map(read_x12, [j[2] for j in jobs], [path] * len(jobs), [max_errors] * len(jobs)))
    for n, ((a, length, _), (chunk_segs, chunk_errors)) in enumerate(zip(jobs, results, strict=True)):

        def original(line: int | None, a: int = a, length: int = length) -> int | None:
            if line is None:
                return None
            if line <= len(header):
                return line
            if line <= len(header) + length:
                return line - len(header) + a
            return None  # the synthetic trailer

        for seg in chunk_segs:
            line = original(seg.line)
            if line is None or (seg.line <= len(header) and n > 0):
                continue
            segs.append(dataclasses.replace(seg, line=line, position=line - st_at if seg.position else 0))
        for e in chunk_errors:
            line = original(e.line)
            if line is None:
                continue
            errors.append(dataclasses.replace(e, line=line, segment=line - st_at if e.segment else e.segment))
    errors.extend(_trailer_checks(raw, ids, ele, st_at, se_at, path))
    for i in (se_at, se_at + 1, se_at + 2):
        els = tuple(raw[i].split(ele)[1:])
        # positions as pyx12 gives them to the trailers: the count of segments before SE
        segs.append(Seg(id=ids[i], els=els, line=i + 1, position=se_at - st_at,
                        loop={"SE": "ST", "GE": "GS", "IEA": "ISA"}[ids[i]]))
    return segs, _dedupe(errors)


def _trailer_checks(raw: list[str], ids: list[str], ele: str, st_at: int, se_at: int, path: str
                    ) -> list[IngestError]:
    def els(i: int) -> list[str]:
        return raw[i].split(ele)

    out = []
    se, st = els(se_at), els(st_at)
    gs_at = ids.index("GS")
    ge, gs, iea, isa = els(se_at + 1), els(gs_at), els(se_at + 2), els(0)
    count = se_at - st_at + 1
    checks = [
        (se_at, "SE", "SE01", (se[1:2] or [""])[0], str(count),
         f"SE count of {(se[1:2] or [''])[0]} for SE02={(se[2:3] or [''])[0]} is wrong. I count {count}"),
        (se_at, "SE", "SE02", (se[2:3] or [""])[0], (st[2:3] or [""])[0], "SE02 does not match ST02"),
        (se_at + 1, "GE", "GE01", (ge[1:2] or [""])[0], "1", "GE01 does not count the 1 transaction set"),
        (se_at + 1, "GE", "GE02", (ge[2:3] or [""])[0], (gs[6:7] or [""])[0], "GE02 does not match GS06"),
        (se_at + 2, "IEA", "IEA01", (iea[1:2] or [""])[0], "1", "IEA01 does not count the 1 group"),
        (se_at + 2, "IEA", "IEA02", (iea[2:3] or [""])[0], (isa[13:14] or [""])[0], "IEA02 does not match ISA13"),
    ]
    for at, seg_id, element, got, want, reason in checks:
        if got.strip().lstrip("0") != want.strip().lstrip("0"):
            out.append(IngestError(file=path, reason=reason, line=at + 1,
                                   segment=(at - st_at + 1) if seg_id == "SE" else None, segment_id=seg_id,
                                   loop={"SE": "ST", "GE": "GS", "IEA": "ISA"}[seg_id], element=element))
    return out
