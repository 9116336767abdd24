"""Exact minimum-edit-distance (mWER) resegmentation of a hypothesis unit stream into N sentences.

The cut points b_0 = 0 ≤ b_1 ≤ … ≤ b_N = J minimise Σ_k ED(hyp[b_{k−1}:b_k], ref_k). That optimum is
the edit distance between the hypothesis and the concatenated references, with each cut where an
optimal alignment path crosses a sentence boundary. Forward: bit-parallel Levenshtein (Myers 1999,
Hyyrö 2003) over the references, one machine word per 64 hypothesis units (Python integers), keeping
the row at every sentence boundary. Backward: from b_N = J, each b_{k−1} is a column j' with
row_{k−1}[j'] + ED(hyp[j':b_k], ref_k) = row_k[b_k], searched only where the length difference
allows it, so the whole thing costs O(J·M/64) word operations for M reference units.
"""

from collections.abc import Hashable, Sequence
from collections.abc import Set as AbstractSet


def _prefix(vp: int, vn: int, j: int) -> int:
    """Sum of the first j deltas of a row (+1 bits in vp, −1 bits in vn): row[j] − row[0]."""
    low = (1 << j) - 1
    return (vp & low).bit_count() - (vn & low).bit_count()


def _myers_step(pm: int, vp: int, vn: int, mask: int) -> tuple[int, int]:
    """One text symbol of global bit-parallel Levenshtein: the new (+1, −1) delta masks of the row."""
    x = pm | vn
    d0 = ((((x & vp) + vp) ^ vp) | x) & mask
    hp = vn | (mask ^ (d0 | vp))
    hn = (d0 & vp) << 1
    hp = ((hp << 1) | 1) & mask  # global alignment: row 0 grows by one per symbol
    return (hn & mask) | (mask ^ (d0 | hp)), hp & d0


def _match_masks(hyp: Sequence[Hashable], reverse: bool) -> dict[Hashable, int]:
    """Per symbol, the bit mask of its hypothesis positions (bit J−1−j for position j when reversed)."""
    masks: dict[Hashable, int] = {}
    last = len(hyp) - 1
    for j, symbol in enumerate(hyp):
        masks[symbol] = masks.get(symbol, 0) | (1 << (last - j if reverse else j))
    return masks


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance (unit costs) between two symbol sequences, bit-parallel."""
    if not a:
        return len(b)
    mask = (1 << len(a)) - 1
    masks = _match_masks(a, reverse=False)
    vp, vn = mask, 0
    for symbol in b:
        vp, vn = _myers_step(masks.get(symbol, 0), vp, vn, mask)
    return len(b) + vp.bit_count() - vn.bit_count()


def mwer_segment(
    hyp: Sequence[Hashable], refs: Sequence[Sequence[Hashable]], preferred: AbstractSet[int] = frozenset()
) -> tuple[list[int], int]:
    """Cut points [b_0 … b_N] of `hyp` minimising the total edit distance to `refs`, and that minimum.

    Among equally good cuts, the latest one in `preferred` (e.g. the hypothesis' own sentence ends)
    is taken, else the latest one.
    """
    n_refs = len(refs)
    if n_refs == 0:
        raise ValueError("mwer_segment needs at least one reference sentence")
    J = len(hyp)
    ref_total = sum(len(r) for r in refs)
    if J == 0:
        return [0] * (n_refs + 1), ref_total
    mask = (1 << J) - 1
    forward = _match_masks(hyp, reverse=False)
    vp, vn = mask, 0
    rows = [(vp, vn)]
    match = forward.get
    for ref in refs:
        for symbol in ref:  # _myers_step, inlined: this loop is the hot path
            x = match(symbol, 0) | vn
            d0 = ((((x & vp) + vp) ^ vp) | x) & mask
            hp = vn | (mask ^ (d0 | vp))
            hn = (d0 & vp) << 1
            hp = ((hp << 1) | 1) & mask
            vp = (hn & mask) | (mask ^ (d0 | hp))
            vn = hp & d0
        rows.append((vp, vn))
    cost = ref_total + vp.bit_count() - vn.bit_count()

    backward = _match_masks(hyp, reverse=True).get
    bounds = [0] * (n_refs + 1)
    bounds[n_refs] = J
    ends_before = ref_total  # reference units up to and including sentence k
    for k in range(n_refs, 1, -1):  # b_0 = 0: units before the first cut belong to sentence 1
        b = bounds[k]
        ref = refs[k - 1]
        n = len(ref)
        starts_before = ends_before - n
        vp, vn = rows[k]
        target = ends_before + _prefix(vp, vn, b)
        # Lower bound of row_{k−1}[j'] + ED(hyp[j':b], ref): |j' − starts_before| + |b − n − j'|.
        lo = max(0, -((target - starts_before - b + n) // 2))
        hi = min(b, (target + starts_before + b - n) // 2)
        # ED(hyp[b−w:b], ref) for w = 0..b−lo: the reversed window against the reversed sentence.
        pmask = (1 << (b - lo)) - 1
        shift = J - b
        wp, wn = pmask, 0
        for symbol in reversed(ref):  # _myers_step, inlined
            x = ((backward(symbol, 0) >> shift) & pmask) | wn
            d0 = ((((x & wp) + wp) ^ wp) | x) & pmask
            hp = wn | (pmask ^ (d0 | wp))
            hn = (d0 & wp) << 1
            hp = ((hp << 1) | 1) & pmask
            wp = (hn & pmask) | (pmask ^ (d0 | hp))
            wn = hp & d0
        # Walk j' down from hi: head = row_{k−1}[j'], tail = ED(hyp[j':b], ref), w = b − j'.
        up, un = rows[k - 1]
        up, un = (up >> lo) & pmask, (un >> lo) & pmask  # bit j' − 1 − lo: the step into column j'
        w = b - hi
        head = starts_before + _prefix(*rows[k - 1], hi)
        tail = n + _prefix(wp, wn, w)
        j, cut = hi, -1
        while True:
            if head + tail == target:
                if cut < 0:
                    cut = j
                if j in preferred:
                    cut = j
                    break
            if j <= lo:
                break
            bit = j - 1 - lo
            head -= ((up >> bit) & 1) - ((un >> bit) & 1)
            tail += ((wp >> w) & 1) - ((wn >> w) & 1)
            j -= 1
            w += 1
        if cut < 0:  # cannot happen unless the DP is wrong; fail loudly rather than mis-cut
            raise AssertionError(f"mWER backtrace found no cut for sentence {k} (target {target})")
        bounds[k - 1] = cut
        ends_before = starts_before
    return bounds, cost
