"""Fingerprints of queries and the bounded store that matches them, for Blacklight.

The fingerprinting (quantisation, vectorised window hashing, top-N distinct hashes), the
exact-repeat digests, and the ring of stored fingerprints with its hash index. The algorithm,
the parameters and the state bounds are described in
:mod:`mlthreat.detect.detectors.blacklight`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = ["WINDOW_KEYS", "FingerprintStore", "digests", "fingerprints", "mix"]

_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_GOLD = 0x9E3779B97F4A7C15


def _splitmix(k: int) -> int:
    h = (_GOLD * (k + 1)) & 0xFFFFFFFFFFFFFFFF
    h = ((h ^ (h >> 30)) * _M1) & 0xFFFFFFFFFFFFFFFF
    h = ((h ^ (h >> 27)) * _M2) & 0xFFFFFFFFFFFFFFFF
    return h ^ (h >> 31)


# one odd 64-bit key per window position: a window hashes to mix(GOLD + sum(q[k] * key[k]))
WINDOW_KEYS = tuple(_splitmix(k) | 1 for k in range(256))


def mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 (wrapping)."""
    import numpy as np

    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(_M1)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(_M2)
    out: np.ndarray = h ^ (h >> np.uint64(31))
    return out


def fingerprints(x: np.ndarray, quantization: float, window: int, step: int,
                 top_n: int) -> np.ndarray:
    """Fingerprints of inputs ``x`` [n, d]: array [n, top_n] uint64, each row the largest
    distinct window hashes in decreasing order, padded with 0 (no hash is 0 in practice)."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    with np.errstate(over="ignore", invalid="ignore"):
        q = np.floor(np.asarray(x, dtype=np.float64) / quantization)
        q = np.nan_to_num(q, nan=0.0, posinf=2.0**62, neginf=-(2.0**62))
        qi = q.astype(np.int64).view(np.uint64)
        win = sliding_window_view(qi, window, axis=1)[:, ::step, :]  # [n, W, window]
        h = win[:, :, 0] * np.uint64(WINDOW_KEYS[0]) + np.uint64(_GOLD)
        for k in range(1, window):  # window is small: a loop over positions, not events
            h += win[:, :, k] * np.uint64(WINDOW_KEYS[k % len(WINDOW_KEYS)])
        h = mix(h)
    h.sort(axis=1)
    h = h[:, ::-1]
    dup = np.zeros(h.shape, dtype=bool)
    dup[:, 1:] = h[:, 1:] == h[:, :-1]
    h[dup] = 0
    # distinct values first (largest first), zeros after: stable sort on the duplicate mask
    order = np.argsort(dup, axis=1, kind="stable")
    kept: np.ndarray = np.take_along_axis(h, order, axis=1)[:, :top_n]
    if kept.shape[1] < top_n:
        kept = np.pad(kept, ((0, 0), (0, top_n - kept.shape[1])))
    return np.ascontiguousarray(kept)


def digests(x: np.ndarray) -> list[int]:
    """One 64-bit digest per input row, of its exact float32 values (equal rows, equal
    digests): how exact repeats are recognised."""
    import numpy as np

    v = np.ascontiguousarray(np.asarray(x, dtype=np.float32)).view(np.uint32).astype(np.uint64)
    d = np.zeros(len(v), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(v.shape[1]):
            d = mix(d ^ (v[:, k] + np.uint64((_GOLD * (k + 1)) & 0xFFFFFFFFFFFFFFFF)))
    out: list[int] = d.tolist()
    return out


def _expand(ends: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ranges ``[ends[i] - counts[i], ends[i])`` as one index array."""
    import numpy as np

    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    first = ends - counts
    excl = np.cumsum(counts) - counts
    return np.repeat(first - excl, counts) + np.arange(total, dtype=np.int64)

class FingerprintStore:
    """The last ``max_fingerprints`` distinct fingerprints (a ring, the oldest evicted first),
    their clients and exact-repeat digests, and an index from each hash to at most
    ``max_postings`` of the most recent stored queries holding it.

    The ring is allocated by :meth:`allocate` (its width, ``top_n``, is known at the first
    batch); sequence numbers count every fingerprint ever stored.
    """

    def __init__(self, max_fingerprints: int, max_postings: int) -> None:
        self.max_fingerprints = max_fingerprints
        self.max_postings = max_postings
        self.next = 0                          # sequence number of the next stored fingerprint
        self.fp: Any = None                    # ring [max_fingerprints, top_n] uint64
        self.ring_client: list[str] = []       # ring: client of each stored fingerprint
        self.ring_digest: list[int] = []       # ring: digest of each stored fingerprint
        self.digests: dict[int, int] = {}      # digest -> sequence number (live ones)
        # hash -> row of the postings table; row r holds the last max_postings sequence
        # numbers stored with that hash, as a ring written at wp[r] % max_postings
        self.index: dict[int, int] = {}
        self.post: Any = None                  # [rows, max_postings] int64
        self.wp: Any = None                    # [rows] int64: postings ever written per row
        self.rows_used = 0

    def allocate(self, top_n: int) -> None:
        """Allocate the ring for fingerprints of ``top_n`` hashes (empty)."""
        import numpy as np

        m = self.max_fingerprints
        self.fp = np.zeros((m, top_n), dtype=np.uint64)
        self.ring_client = [""] * m
        self.ring_digest = [0] * m

    def match(self, fp: np.ndarray, digests: list[int], clients: list[str],
              match_threshold: int
              ) -> tuple[list[int], list[str | None], list[int], list[int]]:
        """Match and store a batch of fingerprints, exactly as one at a time in order.

        Returns, per row: the largest overlap with the stored fingerprint of another input
        (-1 for an exact repeat of a stored input, which is not stored again); the client of
        the earliest stored fingerprint from another client that overlaps by at least
        ``match_threshold``; the sequence number of the earliest stored fingerprint with the
        largest overlap (-1 when none overlaps); the row's own sequence number (-1 when not
        stored)."""
        import numpy as np

        m = self.max_fingerprints
        cap = self.max_postings
        b, n = fp.shape
        start = self.next
        # sequential dedup and ring bookkeeping: one dict operation per event
        seq_l = [-1] * b
        dmap, ring_d = self.digests, self.ring_digest
        nxt = start
        for i, d in enumerate(digests):
            if d in dmap:
                continue  # an exact repeat of a stored input: a retry or a copy
            slot = nxt % m
            if nxt >= m:
                od = ring_d[slot]
                if dmap.get(od) == nxt - m:
                    del dmap[od]
            dmap[d] = nxt
            ring_d[slot] = d
            seq_l[i] = nxt
            nxt += 1
        self.next = nxt
        seq = np.asarray(seq_l, dtype=np.int64)
        stored_now = (seq >= 0).astype(np.int64)
        lo = start - m + np.cumsum(stored_now) - stored_now  # live range's start at each row
        ins = np.flatnonzero(seq >= 0)
        over = np.where(seq >= 0, 0, -1).astype(np.int64)
        best = np.full(b, -1, dtype=np.int64)
        other: list[str | None] = [None] * b
        if len(ins):
            # flat (hash, seq, row) of the stored rows, sorted by hash then seq
            f = fp[ins]
            rows_f = np.repeat(ins, n)
            seq_f = np.repeat(seq[ins], n)
            h_f = f.ravel()
            keep = h_f != 0
            rows_f, seq_f, h_f = rows_f[keep], seq_f[keep], h_f[keep]
            order = np.argsort(h_f, kind="stable")  # seq_f already increases along h_f
            hs, ss, rs = h_f[order], seq_f[order], rows_f[order]
            k = len(hs)
            first = np.ones(k, dtype=bool)
            first[1:] = hs[1:] != hs[:-1]
            starts = np.flatnonzero(first)
            gid = np.cumsum(first) - 1
            pos = np.arange(k, dtype=np.int64) - starts[gid]   # earlier rows in this batch
            stored, ends = self._postings(hs[starts], starts, ss, k)
            avail = np.diff(np.concatenate(([0], ends)))[gid]
            kb = np.minimum(pos, cap)
            ks = np.minimum(avail, cap - kb)
            idx = np.arange(k, dtype=np.int64)
            pr = np.concatenate((np.repeat(rs, kb), np.repeat(rs, ks)))
            pc = np.concatenate((ss[_expand(idx, kb)], stored[_expand(ends[gid], ks)]))
            live = pc >= lo[pr]
            pr, pc = pr[live], pc[live]
            if len(pr):
                base = int(pc.min())
                key = (pr << 40) | (pc - base)
                key.sort()
                cut = np.flatnonzero(key[1:] != key[:-1]) + 1
                kfirst = np.concatenate(([0], cut))
                counts = np.diff(np.concatenate((kfirst, [len(key)])))
                key = key[kfirst]
                krow = key >> 40
                kcand = (key & ((1 << 40) - 1)) + base
                rstart = np.flatnonzero(np.r_[True, krow[1:] != krow[:-1]])
                over[krow[rstart]] = np.maximum.reduceat(counts, rstart)
                # candidates come in increasing sequence within a row: the first at the row's
                # maximum is the earliest best match
                tops = np.flatnonzero(counts == over[krow])
                firsts = tops[np.r_[True, krow[tops][1:] != krow[tops][:-1]]]
                best[krow[firsts]] = kcand[firsts]
                hit = counts >= match_threshold
                self._earliest_other(krow[hit], kcand[hit], clients, seq, start, other)
        self._write(fp, seq, ins, clients)
        if len(self.index) > 4 * m * n + 1024:
            self.rebuild_index()
        return over.tolist(), other, best.tolist(), seq.tolist()

    def _postings(self, uniq: np.ndarray, starts: np.ndarray, ss: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
        """For the batch's distinct hashes ``uniq`` (their postings ``ss[starts[i]:…]`` in
        sequence order), the postings stored before this batch (oldest first, concatenated)
        and where each hash's run ends; then append the batch's. One dict look-up per distinct
        hash (``map``, a C loop); everything else is array arithmetic on the postings table."""
        from itertools import compress, repeat

        import numpy as np

        cap = self.max_postings
        keys = uniq.tolist()
        rows = np.fromiter(map(self.index.get, keys, repeat(-1)), dtype=np.int64,
                           count=len(keys))
        new = rows < 0
        n_new = int(new.sum())
        if n_new:
            fresh = np.arange(self.rows_used, self.rows_used + n_new, dtype=np.int64)
            self._grow(self.rows_used + n_new)
            self.index.update(zip(compress(keys, new.tolist()), fresh.tolist(), strict=True))
            rows[new] = fresh
            self.rows_used += n_new
        wp = self.wp[rows]
        cnt = np.minimum(wp, cap)
        ends = np.cumsum(cnt)
        grp = np.repeat(np.arange(len(rows), dtype=np.int64), cnt)
        j = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) - (ends - cnt)[grp]
        stored = self.post[rows[grp], (wp[grp] - cnt[grp] + j) % cap]
        # append: only each hash's last ``cap`` postings of this batch can survive
        size = np.diff(np.append(starts, k))
        keep = np.minimum(size, cap)
        grp2 = np.repeat(np.arange(len(rows), dtype=np.int64), keep)
        kends = np.cumsum(keep)
        off = np.arange(int(kends[-1]) if len(kends) else 0, dtype=np.int64) - \
            (kends - keep)[grp2]
        at = (wp[grp2] + size[grp2] - keep[grp2] + off) % cap
        self.post[rows[grp2], at] = ss[_expand(starts + size, keep)]
        self.wp[rows] = wp + size
        return stored, ends

    def _grow(self, needed: int) -> None:
        import numpy as np

        have = 0 if self.post is None else len(self.post)
        if needed <= have:
            return
        size = max(needed, 2 * have, 1024)
        post = np.zeros((size, self.max_postings), dtype=np.int64)
        wp = np.zeros(size, dtype=np.int64)
        if have:
            post[:have], wp[:have] = self.post, self.wp
        self.post, self.wp = post, wp

    def _earliest_other(self, rows: np.ndarray, cands: np.ndarray, clients: list[str],
                        seq: np.ndarray, start: int, out: list[str | None]) -> None:
        """Fill ``out[row]`` with the client of the earliest matching fingerprint sent by
        another client (pairs come sorted by row, then sequence number)."""
        if not len(rows):
            return
        ins_rows = {int(s): i for i, s in enumerate(seq.tolist()) if s >= start}
        ring_c, m = self.ring_client, self.max_fingerprints
        for r, c in zip(rows.tolist(), cands.tolist(), strict=True):
            if out[r] is not None:
                continue
            owner = clients[ins_rows[c]] if c >= start else ring_c[c % m]
            if owner != clients[r]:
                out[r] = owner

    def _write(self, fp: np.ndarray, seq: np.ndarray, ins: np.ndarray,
               clients: list[str]) -> None:
        m = self.max_fingerprints
        ins = ins[-m:]  # a batch larger than the store keeps its last rows
        if len(ins):
            slots = seq[ins] % m
            self.fp[slots] = fp[ins]
            ring_c = self.ring_client
            for slot, i in zip(slots.tolist(), ins.tolist(), strict=True):
                ring_c[slot] = clients[i]

    def live(self) -> range:
        return range(max(0, self.next - self.max_fingerprints), self.next)

    def rebuild_index(self) -> None:
        """The hash index of the live fingerprints (each hash's last ``max_postings`` of them),
        which is what matching sees after incremental updates too: postings of evicted
        fingerprints are never matched."""
        import numpy as np

        self.index, self.post, self.wp, self.rows_used = {}, None, None, 0
        live = self.live()
        if self.fp is None or not len(live):
            return
        seqs = np.arange(live.start, live.stop, dtype=np.int64)
        h = self.fp[seqs % self.max_fingerprints]
        s = np.repeat(seqs, h.shape[1])
        h = h.ravel()
        keep = h != 0
        h, s = h[keep], s[keep]
        order = np.argsort(h, kind="stable")  # sequence order kept within a hash
        h, s = h[order], s[order]
        first = np.flatnonzero(np.r_[True, h[1:] != h[:-1]])
        self._postings(h[first], first, s, len(h))

    def rows(self) -> list[list[Any]]:
        """The live fingerprints as ``[seq, client, digest hex, hashes hex]``, oldest first."""
        m = self.max_fingerprints
        fps = []
        if self.fp is not None:
            for s in self.live():
                row = self.fp[s % m].tolist()
                fps.append([s, self.ring_client[s % m], f"{self.ring_digest[s % m]:016x}",
                            "".join(f"{v:016x}" for v in row)])
        return fps

    def load_rows(self, rows: list[list[Any]], top_n: int) -> None:
        """Allocate the ring and fill it from :meth:`rows` output; rebuild the index."""
        import numpy as np

        m = self.max_fingerprints
        self.allocate(top_n)
        for s, client, digest, hexrow in rows:
            row = [int(hexrow[j:j + 16], 16) for j in range(0, 16 * top_n, 16)]
            self.fp[s % m] = np.asarray(row, dtype=np.uint64)
            self.ring_client[s % m] = client
            self.ring_digest[s % m] = int(digest, 16)
            self.digests[int(digest, 16)] = s
        self.rebuild_index()
