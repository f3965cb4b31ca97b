#!/usr/bin/python3
"""A second, independent decoder of ferry bundles (format versions 1, 3, 5, 7, 9, 11 and 13, whose
columnar commits and dictionaries it decodes too), written from bundles/SPEC.md alone. It decodes a frozen vector (SPEC §12) and prints its decoded content
as JSON, in the form SPEC §12 defines; `crates/sync/tests/vectors.rs` checks that this is
exactly what each vector pins.

    /usr/bin/python3 bundles/decoder/ferry_decode.py bundles/vectors/valid-one-record

It reads sealed bundles with the dataset key the vector names (under a later key epoch, in
versions 5 and up, with the key the header's grant seals to the member the vector names; a
version 9 grant is checked under the `signer-key` the vector names, or under the admin key
when member 1 signed it), checks every signature it can (strict Ed25519, §7) and every chain
hash, and does not merge anything. Needs the Debian packages python3-cryptography and
python3-zstandard; BLAKE3 is blake3.py beside it.
"""

import hashlib
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import blake3  # noqa: E402
import zstandard  # noqa: E402
from cryptography.exceptions import InvalidSignature, InvalidTag  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: E402
    Ed25519PrivateKey, Ed25519PublicKey)
from cryptography.hazmat.primitives.asymmetric.x25519 import (  # noqa: E402
    X25519PrivateKey, X25519PublicKey)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

# §8 limits
MAX_ITEM = 16 * 1024 * 1024 + 64
MAX_COMMIT = 16 * 1024 * 1024
MAX_VECTOR = 65536
MAX_NAMES = 65536
MAX_CHANGES = 65536
MAX_OPS = 262144
MAX_RUNS = 65536
MAX_PEER_RECEIPTS = 64
MAX_SEQ = 2**63 - 1
MAX_MS = 2**48 - 1
MAX_NAME = 256
MAX_ID = 1024
MAX_LABEL = 256
CHUNK = 65536
TAG = 16
EXPANSION_FLOOR = 64 * 1024 * 1024
EXPANSION_RATIO = 256
ADMIN = 1


class Refused(Exception):
    """The bundle is refused: a failure class and a reason, as SPEC §12 names them."""

    def __init__(self, cls, reason):
        super().__init__(cls, reason)
        self.cls, self.reason = cls, reason


class End(Exception):
    """The bytes ended inside a value."""


class Bad(Exception):
    """Bytes that are not a valid encoding (postcard, §2)."""


class Limit(Exception):
    """More of something than §8 allows."""


# --- §2 notation: postcard --------------------------------------------------------------

class Reader:
    def __init__(self, data):
        self.data, self.pos = data, 0
        self.ops_left = None  # the ops budget of one commit or record state (§8)

    def byte(self):
        if self.pos >= len(self.data):
            raise End()
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n):
        if self.pos + n > len(self.data):
            raise End()
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self, bits):
        # At most ceil(bits / 7) bytes; the last byte may not carry bits past the type's.
        most = (bits + 6) // 7
        out = 0
        for i in range(most):
            b = self.byte()
            out |= (b & 0x7F) << (7 * i)
            if b & 0x80 == 0:
                if i == most - 1 and b > (1 << (bits - 7 * i)) - 1:
                    raise Bad("varint too large")
                return out
        raise Bad("varint does not end")

    def u16(self):
        return self.varint(16)

    def u32(self):
        return self.varint(32)

    def u64(self):
        return self.varint(64)

    def length(self):
        return self.varint(64)

    def zigzag(self):
        n = self.u64()
        return (n >> 1) ^ -(n & 1)

    def bytes_(self):
        n = self.length()
        if n > len(self.data) - self.pos:
            raise End()
        return self.take(n)

    def string(self):
        try:
            return self.bytes_().decode("utf-8")
        except UnicodeDecodeError:
            raise Bad("not UTF-8")

    def option(self):
        b = self.byte()
        if b > 1:
            raise Bad("option tag")
        return b == 1

    def count(self, most):
        n = self.length()
        if n > most:
            raise Limit()
        return n

    def ops(self):
        """The length of a sequence counted against the ops budget."""
        n = self.length()
        if self.ops_left is not None:
            if n > self.ops_left:
                raise Limit()
            self.ops_left -= n
        return n

    def vector(self):
        """A VersionVector (§4): members strictly ascending, zeros dropped."""
        out = []
        last = None
        for _ in range(self.count(MAX_VECTOR)):
            m, n = self.u32(), self.u64()
            if last is not None and m <= last:
                raise Bad("version vector out of order")
            if n > MAX_SEQ:
                raise Bad("commit number too large")
            last = m
            if n:
                out.append([m, n])
        return out


def hx(b):
    return bytes(b).hex()


# --- §7 signatures ------------------------------------------------------------------------

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = (-121665 * pow(121666, P - 2, P)) % P


def _point(enc):
    """Decompresses an Edwards point (RFC 8032 §5.1.3, y taken modulo p), or None."""
    y = int.from_bytes(enc, "little") & ((1 << 255) - 1)
    sign = enc[31] >> 7
    y %= P
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = (u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P)) % P
    if (v * x * x - u) % P != 0:
        x = (x * pow(2, (P - 1) // 4, P)) % P
        if (v * x * x - u) % P != 0:
            return None
    if sign:
        x = (-x) % P
    return (x, y)


def _add(a, b):
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x = (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P
    y = (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P
    return (x, y)


def _small_order(pt):
    for _ in range(3):
        pt = _add(pt, pt)
    return pt == (0, 1)


def verify(key, msg, sig):
    """Strict Ed25519 (§7): S below the group order, neither the key nor R of small order,
    then the RFC 8032 check."""
    if len(sig) != 64 or int.from_bytes(sig[32:], "little") >= L:
        return False
    a, r = _point(key), _point(sig[:32])
    if a is None or r is None or _small_order(a) or _small_order(r):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes(key)).verify(bytes(sig), bytes(msg))
        return True
    except (InvalidSignature, ValueError):
        return False


def head_message(dataset, member, seq, chain, digest):
    m = b"ferry v1 head\0" + dataset + struct.pack("<IQ", member, seq) + chain
    return m + (b"\x01" + digest if digest is not None else b"\x00")


def chain_root(dataset, author):
    return blake3.derive_key("ferry v1 chain root", dataset + struct.pack("<I", author))


def chain_next(prev, seq, data, columnar=False):
    """§5.4; a columnar commit chains under its own context (§17 1.)."""
    context = "ferry v11 commit chain" if columnar else "ferry v1 commit chain"
    return blake3.derive_key(context, prev + struct.pack("<Q", seq) + data)


# --- §5 commits ---------------------------------------------------------------------------

def clock(h):
    return [h >> 16, h & 0xFFFF]


class Context:
    """An author's chain context (§5.1)."""

    def __init__(self, author, seq, hash_, hlc, deps, names):
        self.author, self.seq, self.hash, self.hlc = author, seq, hash_, hlc
        self.deps, self.names = dict(deps), list(names)


def new_context(dataset, author):
    return Context(author, 0, chain_root(dataset, author), 0, {}, [])


def value(r, tag):
    """A Value (§4.1 and the set ops of §5.2, which share tags 0–7), as SPEC §12's JSON."""
    if tag == 0:
        return None
    if tag in (1, 2):
        return tag == 2
    if tag == 3:
        return {"int": r.zigzag()}
    if tag == 4:
        m, e = r.zigzag(), r.byte()
        return ("dec", m, e)
    if tag == 5:
        return ("f64", r.take(8))
    if tag == 6:
        return {"str": r.string()}
    if tag == 7:
        return {"bytes": hx(r.bytes_())}
    raise Bad("value tag")


class BadValue(Exception):
    pass


def float_value(v):
    """Checks a float (§5.2) and gives its JSON form: the IEEE 754 bits in hex."""
    if isinstance(v, tuple) and v[0] == "dec":
        _, m, e = v
        if abs(m) >= 2**53 or e > 22:
            raise BadValue()
        x = m / 10**e  # both exact: one correctly rounded division, as §5.2 says
        return {"float": struct.pack(">d", x).hex()}
    if isinstance(v, tuple) and v[0] == "f64":
        x = struct.unpack("<d", v[1])[0]
        if x != x or x in (float("inf"), float("-inf")):
            raise BadValue()
        return {"float": v[1][::-1].hex()}
    return v


def decode_commit(ctx, data, dataset, admin, columnar=False):
    """Decodes the author's next commit (§5.2, or the columnar form of §17.1) and advances
    `ctx`; returns its JSON and, for commit 1, the key it proves (§6). Raises
    Refused("commit failure", …)."""

    def fail(reason):
        raise Refused("commit failure", reason)

    if len(data) > MAX_COMMIT:
        fail("limit")
    if columnar and ctx.seq == 0:
        fail("columnar")  # §17 1.: a commit 1 is always a row commit
    r = Reader(data)
    r.ops_left = MAX_OPS
    try:
        ms, lc = r.u64(), r.u16()
        deps = [(r.u32(), r.u64()) for _ in range(r.count(MAX_VECTOR))]
        seen = r.zigzag() if r.option() else None
        names = [r.string() for _ in range(r.count(MAX_NAMES))]
        changes = []
        # The columnar form: its membership changes (at most one), then its blocks.
        count = r.count(1) if columnar else r.count(MAX_CHANGES)
        for _ in range(count):
            tag = r.u32()
            if tag == 0:
                coll, rid = r.u32(), r.string()
                ops = []
                for _ in range(r.ops()):
                    t = r.u32()
                    if t <= 7:
                        ops.append(("set", r.u32(), t, value(r, t)))
                    elif t == 8:
                        ops.append(("incr", r.u32(), r.zigzag()))
                    elif t in (9, 10):
                        ops.append(("add" if t == 9 else "remove", r.u32(), r.string()))
                    elif t == 11:
                        ops.append(("delete",))
                    else:
                        raise Bad("op tag")
                changes.append(("record", coll, rid, ops))
            elif tag == 1:
                changes.append(("genesis", r.string(), r.string(), r.take(32)))
            elif tag == 2:
                member, label, invite_key, cert = r.u32(), r.string(), r.take(32), r.take(64)
                changes.append(("join", member, label, invite_key, cert, r.take(32), r.take(64)))
            else:
                raise Bad("change tag")
        if columnar:
            if any(ch[0] == "record" for ch in changes):
                fail("columnar")
            changes += blocks(r, MAX_CHANGES - len(changes))
    except (End, Bad):
        fail("malformed")
    except Limit:
        fail("limit")
    except Columnar:
        fail("columnar")
    if r.pos != len(data):
        fail("trailing-bytes")
    seq = ctx.seq + 1
    if ms > MAX_MS:
        fail("clock")
    if ctx.seq == 0:
        total = ms
    else:
        total = (ctx.hlc >> 16) + ms
        if total > MAX_MS:
            fail("clock")
    hlc = (total << 16) | lc
    if ctx.seq > 0 and hlc <= ctx.hlc:
        fail("clock")
    full = dict(ctx.deps)
    last = None
    for m, n in deps:
        if last is not None and m <= last:
            fail("deps")
        last = m
        if m == ctx.author or n <= full.get(m, 0):
            fail("deps")
        full[m] = n
    if len(ctx.names) + len(names) > MAX_NAMES:
        fail("limit")
    table = list(ctx.names)
    for n in names:
        if not 1 <= len(n.encode()) <= MAX_NAME or n in table:
            fail("name")
        table.append(n)

    def name(i):
        if i >= len(table):
            fail("name")
        return table[i]

    out, key = [], None
    for i, ch in enumerate(changes):
        first = seq == 1 and i == 0
        if ch[0] == "record":
            if first:
                fail("membership")
            _, coll, rid, ops = ch
            if not 1 <= len(rid.encode()) <= MAX_ID:
                fail("record-id")
            jops = []
            for op in ops:
                if op[0] == "set":
                    f = name(op[1])
                    try:
                        v = float_value(op[3])
                    except BadValue:
                        fail("value")
                    jops.append({"op": "set", "field": f, "value": v})
                elif op[0] == "incr":
                    jops.append({"op": "incr", "field": name(op[1]), "by": op[2]})
                elif op[0] in ("add", "remove"):
                    jops.append({"op": op[0], "field": name(op[1]), "elem": op[2]})
                else:
                    jops.append({"op": "delete"})
            out.append({"record": {"collection": name(coll), "id": rid, "ops": jops}})
        elif ch[0] == "genesis":
            _, dname, label, admin_key = ch
            if not first or ctx.author != ADMIN:
                fail("membership")
            if len(dname.encode()) > MAX_LABEL or len(label.encode()) > MAX_LABEL:
                fail("name")
            out.append({"genesis": {"name": dname, "label": label, "admin_key": hx(admin_key)}})
            if admin_key == admin:
                key = admin_key
        else:
            _, member, label, invite_key, cert, member_key, join_sig = ch
            if not first or ctx.author == ADMIN:
                fail("membership")
            out.append({"join": {
                "member": member, "label": label, "invite_key": hx(invite_key),
                "cert": hx(cert), "member_key": hx(member_key), "join_sig": hx(join_sig)}})
            # §6, §7.3, §7.4: the admin invited this member number, the invitation key
            # signed this device key.
            invite = (b"ferry v1 invite\0" + dataset + struct.pack("<I", member) + invite_key
                      + label.encode())
            join = b"ferry v1 join\0" + dataset + struct.pack("<I", ctx.author) + member_key
            if (member == ctx.author and len(label.encode()) <= MAX_LABEL
                    and verify(admin, invite, cert) and verify(invite_key, join, join_sig)):
                key = member_key
    if seq == 1 and not out:
        fail("membership")
    seen_ms = None
    if seen is not None:
        seen_ms = ((hlc >> 16) + seen) % 2**64
        if seen_ms > MAX_MS:
            fail("clock")
    ctx.seq, ctx.hlc, ctx.deps, ctx.names = seq, hlc, full, table
    ctx.hash = chain_next(ctx.hash, seq, data, columnar)
    return {
        "author": ctx.author, "seq": seq, "hlc": clock(hlc),
        "deps": [[m, full[m]] for m in sorted(full)], "seen": seen_ms,
        "changes": out, "hash": hx(ctx.hash),
    }, key


# --- §17.1 the columnar form --------------------------------------------------------------

class Columnar(Exception):
    """A columnar commit breaks §17.1 (commit failure `columnar`)."""


def cvarint(r):
    """An unsigned LEB128 varint of at most 64 bits, in its shortest form (§17.1)."""
    out = 0
    for i in range(10):
        if r.pos >= len(r.data):
            raise Columnar("ends inside a number")
        b = r.data[r.pos]
        r.pos += 1
        if i == 9 and b > 1:
            raise Columnar("number too large")
        out |= (b & 0x7F) << (7 * i)
        if b & 0x80 == 0:
            if b == 0 and i > 0:
                raise Columnar("number not in its shortest form")
            return out
    raise Columnar("number too long")


def ccount(r, most):
    n = cvarint(r)
    if n > most:
        raise Columnar("a count past the limits")
    return n


def ctake(r, n):
    if n > len(r.data) - r.pos:
        raise Columnar("cut short")
    out = r.data[r.pos:r.pos + n]
    r.pos += n
    return out


def ctext(r):
    try:
        return ctake(r, cvarint(r)).decode("utf-8")
    except UnicodeDecodeError:
        raise Columnar("text not UTF-8")


def front(r, n):
    """`n` front-coded texts (§17.1 `ids`)."""
    out, prev = [], b""
    for _ in range(n):
        shared = cvarint(r)
        if shared > len(prev):
            raise Columnar("shares more than the text before holds")
        t = prev[:shared] + ctake(r, cvarint(r))
        try:
            out.append(t.decode("utf-8"))
        except UnicodeDecodeError:
            raise Columnar("text not UTF-8")
        prev = t
    return out


def deltas(r, n):
    """Zigzag varints of each value minus the one before, wrapping at 64 bits."""
    out, prev = [], 0
    for _ in range(n):
        d = cvarint(r)
        prev = (prev + ((d >> 1) ^ -(d & 1))) % 2**64
        out.append(prev - 2**64 if prev >= 2**63 else prev)
    return out


def civil(z):
    """The date `YYYY-MM-DD` of day number `z` from 1970-01-01 (proleptic Gregorian), for
    years 0000–9999 (Howard Hinnant's civil_from_days)."""
    if not -719528 <= z <= 2932896:
        raise Columnar("a date outside years 0000-9999")
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    y = yoe + era * 400
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return "%04d-%02d-%02d" % (y + (m <= 2), m, d)


def bits(r, n, width):
    """`n` numbers of `width` bits, lowest bit first, padding bits 0."""
    if width == 0:
        return [0] * n
    raw = ctake(r, (n * width + 7) // 8)
    acc = int.from_bytes(raw, "little")
    if acc >> (n * width):
        raise Columnar("padding bits set")
    return [(acc >> (i * width)) & ((1 << width) - 1) for i in range(n)]


def column(r, n):
    """One column of `n` values (§17.1): each a value as `value()` gives it (None for null,
    True/False, {"int"}, ("dec", m, e) / ("f64", bytes), {"str"}, {"bytes"})."""
    codec = ctake(r, 1)[0]
    null = [False] * n
    if codec & 0x80:
        null = [bool(b) for b in bits(r, n, 1)]
        if all(null) or not any(null):
            raise Columnar("a null bitmap with all or no values null")
    m = null.count(False)
    base = codec & 0x7F
    if base == 0:
        vals = []
        for _ in range(m):
            try:
                v = value(r, r.u32())
                if isinstance(v, tuple):
                    float_value(v)
            except (End, Bad, BadValue):
                raise Columnar("a malformed value")
            vals.append(v)
    elif base == 1:
        vals = [b == 1 for b in bits(r, m, 1)]
    elif base == 2:
        vals = [{"int": i} for i in deltas(r, m)]
    elif base == 3:
        e = ctake(r, 1)[0]
        vals = []
        for mant in deltas(r, m):
            if abs(mant) >= 2**53 or e > 22:
                raise Columnar("a decimal past exactness")
            vals.append(("dec", mant, e))
    elif base == 4:
        k = cvarint(r)
        if k > m:
            raise Columnar("more texts than values")
        texts = [ctext(r) for _ in range(k)]
        vals = []
        for _ in range(m):
            i = cvarint(r)
            if i >= k:
                raise Columnar("an index past the dictionary")
            vals.append({"str": texts[i]})
    elif base == 5:
        vals = [{"str": t} for t in front(r, m)]
    elif base == 6:
        vals = [{"str": civil(d)} for d in deltas(r, m)]
    else:
        raise Columnar("unknown codec")
    it = iter(vals)
    return [None if x else next(it) for x in null]


def as_op(kind, field, v):
    """The op of slot (kind, field) carrying `v`, as decode_commit's op tuples."""
    if kind == 0:
        if v is None:
            return ("set", field, 0, None)
        if v is True or v is False:
            return ("set", field, 2 if v else 1, v)
        if isinstance(v, tuple):
            return ("set", field, 4 if v[0] == "dec" else 5, v)
        if "int" in v:
            return ("set", field, 3, v)
        if "str" in v:
            return ("set", field, 6, v)
        return ("set", field, 7, v)
    if kind == 1 and isinstance(v, dict) and "int" in v:
        return ("incr", field, v["int"])
    if kind in (2, 3) and isinstance(v, dict) and "str" in v:
        return ("add" if kind == 2 else "remove", field, v["str"])
    raise Columnar("a value of the wrong kind for its op")


def blocks(r, records):
    """The blocks of a columnar commit (§17.1) as decode_commit's ("record", …) changes, in
    block order."""
    out, ops_left = [], MAX_OPS
    for _ in range(ccount(r, records)):
        coll = cvarint(r)
        if coll > 2**32 - 1:
            raise Columnar("a number past 2^32")
        n = ccount(r, records)
        records -= n
        ids = front(r, n)
        if any(len(i.encode()) > MAX_ID for i in ids):
            raise Columnar("a text longer than allowed")
        s = ccount(r, n)
        if n == 0 or s == 0:
            raise Columnar("a block without records or shapes")
        shapes, shape_ops = [], MAX_OPS
        for _ in range(s):
            o = ccount(r, shape_ops)
            shape_ops -= o
            shape = []
            for _ in range(o):
                kind = ctake(r, 1)[0]
                if kind > 4:
                    raise Columnar("an unknown op kind")
                field = cvarint(r)
                if field > 2**32 - 1:
                    raise Columnar("a number past 2^32")
                if kind == 4 and field != 0:
                    raise Columnar("a delete names a field")
                shape.append((kind, field))
            shapes.append(shape)
        width = 0 if s == 1 else (s - 1).bit_length()
        which = bits(r, n, width)
        if any(w >= s for w in which):
            raise Columnar("a shape index out of range")
        uses = {}
        for w in which:
            ops_left -= len(shapes[w])
            if ops_left < 0:
                raise Limit()
            for slot in shapes[w]:
                uses[slot] = uses.get(slot, 0) + 1
        columns = {}
        for shape in shapes:
            for slot in shape:
                if slot[0] != 4 and slot not in columns:
                    columns[slot] = iter(column(r, uses.get(slot, 0)))
        for rid, w in zip(ids, which):
            ops = []
            for kind, field in shapes[w]:
                if kind == 4:
                    ops.append(("delete",))
                else:
                    ops.append(as_op(kind, field, next(columns[(kind, field)])))
            out.append(("record", coll, rid, ops))
    return out


# --- §4.1 record states -------------------------------------------------------------------

def stamp(r):
    author, seq, hlc, rank = r.u32(), r.u64(), r.u64(), r.u64()
    return {"author": author, "seq": seq, "hlc": clock(hlc), "rank": rank}


def sibling(r):
    s = stamp(r)
    tag = r.u32()
    if tag == 0:
        s["value"] = float_value(value(r, r.u32()))
    elif tag == 1:
        s["incr"] = r.zigzag()
    elif tag == 2:
        s["elem"] = r.string()
    else:
        raise Bad("entry tag")
    return s


def dot_list(r, counted):
    """`varint(n) ‖ n × (member: varint(u32) ‖ seq: varint(u64))`, counted against the
    record state's budget (§13 2.)."""
    n = counted()
    return [[r.u32(), r.u64()] for _ in range(n)]


def ghosts(r):
    """A version 3 record state's ghosts (§13 2.), in wire order; raises Bad when they are
    not in canonical order."""
    out = []
    for _ in range(r.ops()):  # each ghost counts 1, its `under` u and its `buried` b
        f = r.string()
        s = sibling(r)
        under = dot_list(r, r.ops)
        buried = dot_list(r, r.ops)
        out.append({"field": f, "sibling": s, "under": under, "buried": buried})

    def key(g):
        s = g["sibling"]
        kind = 0 if "value" in s else 1 if "incr" in s else 2
        return (g["field"].encode(), s["author"], s["seq"], kind,
                s["elem"].encode() if kind == 2 else b"")

    for a, b in zip(out, out[1:]):
        if not key(a) < key(b):
            raise Bad("ghosts out of order or repeated")
    for g in out:
        if not g["under"]:
            raise Bad("a ghost under no delete")
        if any(not a < b for a, b in zip(g["under"], g["under"][1:])):
            raise Bad("a ghost's deletes out of order")
        if any(not a[0] < b[0] for a, b in zip(g["buried"], g["buried"][1:])):
            raise Bad("a ghost's burying members out of order")
    return out


def record_state(collection, rid, data, version):
    """A snapshot record state (§4.1); in version 3 followed by its ghosts (§13)."""
    r = Reader(data)
    r.ops_left = MAX_OPS
    try:
        fields = {}
        for _ in range(r.count(MAX_NAMES)):
            f = r.string()
            fields[f] = [sibling(r) for _ in range(r.ops())]
        tombstones = [stamp(r) for _ in range(r.ops())]
        firsts = {}
        for _ in range(r.count(MAX_NAMES)):
            f = r.string()
            firsts[f] = sibling(r)
        gs = ghosts(r) if version in (3, 5, 7, 9, 11, 13) else None
    except (End, Bad, BadValue):
        raise Refused("payload failure", "malformed-item")
    except Limit:
        raise Refused("limit failure", "count")
    if r.pos != len(data):
        raise Refused("payload failure", "malformed-item")
    order = lambda m: sorted(m.items(), key=lambda kv: kv[0].encode())  # noqa: E731
    out = {
        "collection": collection, "id": rid,
        "fields": [{"field": f, "siblings": s} for f, s in order(fields)],
        "tombstones": tombstones,
        "firsts": [{"field": f, "sibling": s} for f, s in order(firsts)],
    }
    if gs is not None:
        out["ghosts"] = gs
    return out


# --- §3 header and stream -----------------------------------------------------------------

def read_header(b):
    r = Reader(b)
    try:
        magic = r.byte()
        if magic not in (0x46, 0x50):
            raise Refused("header failure", "not-a-bundle")
        version = r.byte()
        if version >= 0x20:
            raise Refused("header failure", "not-a-bundle")
        if version not in (1, 3, 5, 7, 9, 11, 13):
            raise Refused("version failure", "unsupported-version")
        dataset = r.take(8)
        sender = header_varint(r)
        salt = r.take(12 if version in (11, 13) else 16)  # §17 3.
        epoch, signer, grant, form = 0, ADMIN, b"", {5: 5, 7: 5, 9: 9}.get(version, 0)
        if version in (5, 7, 9, 11, 13):  # §14 1., §15 1., §16 2., §17 3.
            epoch = header_varint(r)
        if version in (5, 7, 9) or (version in (11, 13) and epoch > 0):
            if version in (9, 11, 13):
                signer = header_varint(r)
            n = header_varint(r)
            zero = epoch == 0 and (version == 5 or n > 0 or signer != ADMIN)
            most = MAX_GRANT + (1 if version in (11, 13) else 0)
            if zero or signer == 0 or epoch > MAX_EPOCH or n > most:
                raise Refused("header failure", "bad-header")
            grant = r.take(n)
            if version in (11, 13) and grant:  # the grant names its own format
                form, grant = grant[0], grant[1:]
                if form not in (5, 9):
                    raise Refused("header failure", "bad-header")
    except End:
        raise Refused("header failure", "bad-header")
    return magic, version, dataset, sender, salt, b[:r.pos], epoch, signer, (form, grant)


def header_varint(r):
    """A minimal varint of at most 32 bits (§3)."""
    n = 0
    for i in range(5):
        x = r.byte()
        n |= (x & 0x7F) << (7 * i)
        if x & 0x80 == 0:
            if (i > 0 and x == 0) or n > 2**32 - 1:
                raise Refused("header failure", "bad-header")
            return n
    raise Refused("header failure", "bad-header")


# --- §14 key epochs -----------------------------------------------------------------------

MAX_EPOCH = 4096
MAX_GRANT = 262144


def read_grant(g, dataset, version, named, key_of):
    """An epoch grant, checked: in a version 5 or 7 header a version 5 grant (§14.1), in a
    version 9 header a version 9 grant (§16 3.), which must name the header's `named`
    (epoch, signer). `key_of(signer)` is the key the reader holds for the signer, or None.
    Raises Refused("key failure", "bad-grant"), or "no-key" when the reader cannot check
    the signature yet (§16 3.: the bundle waits, as one under an epoch it lacks does)."""
    def bad():
        raise Refused("key failure", "bad-grant")
    r = Reader(g)
    try:
        epoch = r.u32()
        signer = r.u32() if version == 9 else ADMIN
        admin_seq, at_ms = r.u64(), r.u64()
        removed = [[r.u32(), r.u64()] for _ in range(r.length())]
        ephemeral = r.take(32)
        wraps = [(r.u32(), r.take(32), r.take(16)) for _ in range(r.length())]
        history = r.take(r.length())
        body_end = r.pos
        signature = r.take(64)
    except (End, Bad):
        bad()
    members = [w[0] for w in wraps]
    gone = [m for m, _ in removed]
    ascending = lambda v: all(a < b for a, b in zip(v, v[1:]))  # noqa: E731
    if version == 9:
        history_ok = len(history) >= 16 and signer >= 1
    else:
        history_ok = len(history) == 32 * epoch + 16
    if (r.pos != len(g) or not 1 <= epoch <= MAX_EPOCH or not history_ok
            or not ascending(members) or not ascending(gone) or set(members) & set(gone)):
        bad()
    if version == 9 and (epoch, signer) != named:
        bad()  # §16 3.: a grant of another epoch than the header's
    key = key_of(signer)
    if key is None:
        raise Refused("key failure", "no-key")
    context = b"ferry v9 epoch grant\0" if version == 9 else b"ferry v5 epoch grant\0"
    if not verify(key, context + dataset + g[:body_end], signature):
        bad()
    return {"version": 9 if version == 9 else 5, "epoch": epoch, "signer": signer,
            "admin_seq": admin_seq, "at_ms": at_ms, "removed": removed,
            "ephemeral": ephemeral, "wraps": wraps, "history": history,
            "signature": signature, "opened": None}


def montgomery_u(a):
    """u = (1 + y) / (1 − y) mod p of an Edwards point's encoding (RFC 7748 §4.1)."""
    y = (int.from_bytes(a, "little") & ((1 << 255) - 1)) % P
    return ((1 + y) * pow((1 - y) % P, P - 2, P) % P).to_bytes(32, "little")


def seal_nonce():
    return (0).to_bytes(11, "big") + b"\x01"


def open_grant(grant, dataset, member, secret):
    """The key of the grant's epoch for `member` with device secret `secret` (§14.1,
    §16 3.) and the earlier keys its history holds: for a version 5 grant `key(0)` …
    `key(epoch − 1)`, for a version 9 grant `(number, signer, key)` triples; or the key
    failure."""
    epoch, signer, v9 = grant["epoch"], grant["signer"], grant["version"] == 9
    wrap = [w for w in grant["wraps"] if w[0] == member]
    if not wrap:
        if member in [m for m, _ in grant["removed"]]:
            raise Refused("key failure", "removed")
        raise Refused("key failure", "no-key")
    _, sealed, tag = wrap[0]
    scalar = hashlib.sha512(secret).digest()[:32]
    theirs = montgomery_u(secret_public(secret))
    shared = X25519PrivateKey.from_private_bytes(scalar).exchange(
        X25519PublicKey.from_public_bytes(bytes(grant["ephemeral"])))
    if v9:
        wrap_ctx, numbers = "ferry v9 epoch key wrap", struct.pack("<III", epoch, signer, member)
    else:
        wrap_ctx, numbers = "ferry v5 epoch key wrap", struct.pack("<II", epoch, member)
    wrap_key = blake3.derive_key(
        wrap_ctx, shared + bytes(grant["ephemeral"]) + theirs + dataset + numbers)
    try:
        key = ChaCha20Poly1305(wrap_key).decrypt(seal_nonce(), bytes(sealed) + bytes(tag), b"")
    except InvalidTag:
        raise Refused("key failure", "no-key")
    if v9:
        hkey = blake3.derive_key("ferry v9 epoch history",
                                 key + dataset + struct.pack("<II", epoch, signer))
    else:
        hkey = blake3.derive_key("ferry v5 epoch history", key + dataset + struct.pack("<I", epoch))
    try:
        earlier = ChaCha20Poly1305(hkey).decrypt(seal_nonce(), bytes(grant["history"]), b"")
    except InvalidTag:
        raise Refused("key failure", "bad-grant")
    if v9:
        return key, history_keys(earlier, epoch)
    return key, [earlier[i:i + 32] for i in range(0, len(earlier), 32)]


def history_keys(h, epoch):
    """A version 9 grant's opened history `H` (§16 3.): `(number, signer, key)` triples,
    strictly ascending by (number, signer), starting with (0, 1), every number below the
    grant's epoch, nothing after them; else Refused("key failure", "bad-grant")."""
    def bad():
        raise Refused("key failure", "bad-grant")
    r = Reader(h)
    try:
        out = [(r.u32(), r.u32(), r.take(32)) for _ in range(r.length())]
    except (End, Bad):
        bad()
    pairs = [(n, s) for n, s, _ in out]
    if (r.pos != len(h) or not pairs or pairs[0] != (0, ADMIN)
            or any(not a < b for a, b in zip(pairs, pairs[1:]))
            or any(n >= epoch for n, _ in pairs)):
        bad()
    return out


def secret_public(secret):
    """The Ed25519 public key of a device secret (RFC 8032 §5.1.5)."""
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    return Ed25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(*raw)


def open_stream(sealed, key):
    """The plaintext of §3.1: chunks of 65 552 sealed bytes, the last one shorter or with
    nothing after it."""
    aead = ChaCha20Poly1305(key)
    out, i, pos = [], 0, 0
    while True:
        chunk = sealed[pos:pos + CHUNK + TAG]
        pos += len(chunk)
        last = pos >= len(sealed)
        nonce = i.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        try:
            out.append(aead.decrypt(nonce, chunk, b""))
        except (InvalidTag, ValueError):
            raise Refused("decrypt failure", "chunk")
        if last:
            return b"".join(out)
        i += 1


def inflate(body, dictionary=None):
    """One zstd frame (§3.2), window at most 2^24, within the expansion limit (§8); with a
    dataset dictionary's bytes for flag 2 (§18)."""
    d = zstandard.ZstdDecompressor(
        max_window_size=1 << 24,
        dict_data=None if dictionary is None else zstandard.ZstdCompressionDict(dictionary),
    ).decompressobj()
    out, size, used = [], 0, 0
    try:
        while used < len(body) and not d.eof:
            piece = body[used:used + 4096]
            used += len(piece)
            x = d.decompress(piece)
            size += len(x)
            if size > EXPANSION_FLOOR + EXPANSION_RATIO * used:
                raise Refused("limit failure", "expansion")
            out.append(x)
    except zstandard.ZstdError:
        raise Refused("payload failure", "bad-zstd")
    if not d.eof:
        raise Refused("payload failure", "bad-zstd")
    if d.unused_data or used < len(body):
        raise Refused("payload failure", "trailing-data")
    return b"".join(out)


# --- §4 items -----------------------------------------------------------------------------

def read_item(r):
    tag = r.u32()
    if tag == 0:
        return ("receipt", r.vector())
    if tag == 1:
        return ("peer", r.u32(), r.vector())
    if tag == 2:
        author, first, count, kind = r.u32(), r.u64(), r.u64(), r.u32()
        if kind == 0:
            proof = {"kind": "sender"}
        elif kind == 1:
            proof = {"kind": "head", "sig": hx(r.take(64))}
        elif kind == 2:
            proof = {"kind": "bundle", "digest": hx(r.take(32)), "sig": hx(r.take(64))}
        else:
            raise Bad("proof tag")
        return ("run", author, first, count, proof)
    if tag == 3:
        n = r.length()
        if n > MAX_ITEM:
            raise Refused("payload failure", "item-too-large")
        if n > len(r.data) - r.pos:
            raise End()
        return ("commit", r.take(n))
    if tag == 4:
        return ("snapshot", r.vector(), r.vector())
    if tag == 5:
        author, seq, h, hlc, deps = r.u32(), r.u64(), r.take(32), r.u64(), r.vector()
        names = [r.string() for _ in range(r.count(MAX_NAMES))]
        return ("chain", author, seq, h, hlc, deps, names, r.bytes_())
    if tag == 6:
        return ("record", r.string(), r.string(), r.bytes_())
    if tag == 7 and r.version >= 11:  # §17 2.
        n = r.length()
        if n > MAX_ITEM:
            raise Refused("payload failure", "item-too-large")
        if n > len(r.data) - r.pos:
            raise End()
        return ("columnar", r.take(n))
    raise Bad("item tag")


def items(payload, version):
    """The items in order, with the order rules of §4 checked."""

    def bad(reason):
        raise Refused("payload failure", reason)

    r = Reader(payload)
    r.version = version
    state, in_run, authors, peers = "start", 0, set(), 0
    out = []
    while r.pos < len(payload):
        try:
            item = read_item(r)
        except End:
            bad("ends-inside-item")
        except Bad:
            bad("malformed-item")
        except Limit:
            raise Refused("limit failure", "count")
        kind = item[0]
        if kind == "run":
            if len(authors) == MAX_RUNS:
                bad("too-many-runs")
            if item[1] in authors:
                bad("two-runs-one-author")
            authors.add(item[1])
        if state == "start":
            if kind != "receipt":
                bad("no-receipt")
            state = "receipts"
        elif kind == "receipt":
            bad("item-order")
        elif kind == "peer":
            if state != "receipts":
                bad("item-order")
            peers += 1
            if peers > MAX_PEER_RECEIPTS:
                raise Refused("limit failure", "peer-receipts")
        elif kind == "snapshot":
            if state != "receipts":
                bad("item-order")
            state = "chains"
        elif kind == "chain":
            if state != "chains":
                bad("item-order")
            if item[2] > MAX_SEQ:
                bad("bad-run")
        elif kind == "record":
            if state not in ("chains", "records"):
                bad("item-order")
            state = "records"
        elif kind == "run":
            _, _, first, count, _ = item
            if in_run > 0:
                bad("run-cut-short")
            if count == 0:
                bad("empty-run")
            if first == 0 or first + count - 1 > MAX_SEQ:
                bad("bad-run")
            state, in_run = "runs", count
        elif kind in ("commit", "columnar"):
            if in_run == 0:
                bad("commit-outside-run")
            in_run -= 1
        out.append(item)
    if state == "start":
        bad("no-receipt")
    if in_run > 0:
        bad("run-cut-short")
    return out


# --- the whole bundle ---------------------------------------------------------------------

def decode(bundle, dataset, key, admin, member=None, secret=None, signer_key=None,
           dictionary=None):
    magic, version, ds, sender, salt, header, epoch, signer, grant_bytes = read_header(bundle)
    grant_format, grant_bytes = grant_bytes
    if ds != dataset:
        raise Refused("dataset failure", "another-dataset")
    if sender == 0:
        raise Refused("payload failure", "malformed-item")

    def key_of(m):
        """The key the reader holds for a grant's signer (§16: the vector's `signer-key`,
        else the admin key for member 1, the only signer of version 5 grants)."""
        if version in (9, 11, 13) and signer_key is not None:
            return signer_key
        return admin if m == ADMIN else None

    grant = None
    if version in (5, 7, 9, 11, 13) and grant_bytes:
        grant = read_grant(grant_bytes, dataset, grant_format, (epoch, signer), key_of)
    if epoch > 0 and magic == 0x46:  # §14.2, §16 4.: the reader holds only epoch 0's key
        if grant is None or member is None:
            raise Refused("key failure", "no-key")
        if grant["epoch"] != epoch:
            raise Refused("key failure", "no-key")
        key, earlier = open_grant(grant, dataset, member, secret)
        if grant["version"] == 9:
            grant["opened"] = [[n, s] for n, s, _ in earlier]
    rest = bundle[len(header):]
    plain = rest if magic == 0x50 else open_stream(rest, blake3.derive_key(
        "ferry v1 bundle key", key + header))
    if len(plain) <= 64:
        raise Refused("payload failure", "no-signature")
    flag, body, signature = plain[0], plain[1:-64], plain[-64:]
    signed = body
    number = None
    if flag == 0:
        payload = body
    elif flag == 1:
        payload = inflate(body)
    elif flag == 2 and version >= 13:  # §18: K, then a frame compressed with dictionary K
        r = Reader(body)
        try:
            number = header_varint(r)
        except (Refused, End):
            raise Refused("payload failure", "malformed-item")
        if number == 0:
            raise Refused("payload failure", "malformed-item")
        if dictionary is None or dictionary[0] != number:
            raise Refused("dictionary failure", "no-dictionary")
        payload = inflate(body[r.pos:], dictionary[1])
        # The dictionary's hash is in the digest, not in the bundle.
        signed = body[:r.pos] + blake3.derive_key("ferry v13 dictionary", dictionary[1]) + \
            body[r.pos:]
    else:
        raise Refused("payload failure", "unknown-flag")
    digest = blake3.derive_key("ferry v1 bundle digest", header + bytes([flag]) + signed)
    its = items(payload, version)

    receipt = its[0][1]
    head = dict(receipt).get(sender, 0)
    contexts, keys, hashes = {}, {}, {}
    peers, snapshot, runs = [], None, []

    pending = []  # commit failures: reported only once the signature is checked (§12.1)

    def decode_into(ctx, data, columnar=False):
        try:
            j, k = decode_commit(ctx, data, dataset, admin, columnar)
        except Refused as e:
            pending.append(e)
            contexts.pop(ctx.author, None)
            return {"author": ctx.author, "seq": ctx.seq + 1, "bytes": hx(data)}
        if j["seq"] == 1:
            if k is None:
                raise Refused("membership failure", "membership")
            keys[ctx.author] = k
        hashes[(ctx.author, j["seq"])] = ctx.hash
        return j

    for item in its[1:]:
        kind = item[0]
        if kind == "peer":
            peers.append({"member": item[1], "vector": item[2]})
        elif kind == "snapshot":
            snapshot = {"state": item[1], "compacted": item[2], "chains": [], "records": []}
        elif kind == "chain":
            _, author, seq, h, hlc, deps, names, first = item
            first_json = decode_into(new_context(dataset, author), first)
            hashes[(author, seq)] = h
            contexts[author] = Context(author, seq, h, hlc, deps, names)
            snapshot["chains"].append({
                "author": author, "seq": seq, "hash": hx(h), "hlc": clock(hlc),
                "deps": deps, "names": names, "first": first_json})
        elif kind == "record":
            try:
                rec = record_state(item[1], item[2], item[3], version)
            except Refused:
                if sender == ADMIN and snapshot["compacted"]:
                    raise  # it would be installed (§4.1)
                rec = {"collection": item[1], "id": item[2], "bytes": hx(item[3])}
            snapshot["records"].append(rec)
        elif kind == "run":
            _, author, first, count, proof = item
            if proof["kind"] == "sender" and (author != sender or first + count - 1 != head):
                raise Refused("payload failure", "sender-proof")
            if first == 1:
                contexts[author] = new_context(dataset, author)
            elif author in contexts and contexts[author].seq + 1 != first:
                del contexts[author]
            runs.append({"author": author, "first": first, "count": count, "proof": proof,
                         "commits": []})
        elif kind in ("commit", "columnar"):
            run = runs[-1]
            seq = run["first"] + len(run["commits"])
            ctx = contexts.get(run["author"])
            if ctx is None:
                run["commits"].append({"author": run["author"], "seq": seq, "bytes": hx(item[1])})
            else:
                run["commits"].append(decode_into(ctx, item[1], kind == "columnar"))

    def check(author, seq, dig, sig):
        h = chain_root(dataset, author) if seq == 0 else hashes.get((author, seq))
        if author not in keys or h is None:
            return None
        return verify(keys[author], head_message(dataset, author, seq, h, dig), sig)

    authenticated = check(sender, head, digest, signature)
    if authenticated is False:
        raise Refused("signature failure", "bad-signature")
    if pending:
        raise pending[0]
    if snapshot is not None and sender == ADMIN:
        check_snapshot(snapshot, version)
    for run in runs:
        end = run["first"] + run["count"] - 1
        p = run["proof"]
        if p["kind"] == "sender":
            run["verified"] = authenticated
        else:
            dig = bytes.fromhex(p["digest"]) if p["kind"] == "bundle" else None
            run["verified"] = check(run["author"], end, dig, bytes.fromhex(p["sig"]))
    out = {
        "expect": "success",
        "header": header_json(magic, version, ds, sender, salt, epoch, signer, grant,
                              grant_format),
        "compressed": flag != 0,
        "receipt": receipt,
        "peer_receipts": peers,
        "snapshot": snapshot,
        "runs": runs,
        "digest": hx(digest),
        "signature": hx(signature),
        "authenticated": bool(authenticated),
    }
    if number is not None:
        out["dictionary"] = number
    return out


def may_write(author, collection, rid):
    """§10.4: who may write a record of a reserved collection."""
    if not collection.startswith("_") or author == ADMIN or collection == "_forks":
        return True
    return collection == "_members" and rid == str(author)


def check_snapshot(snap, version):
    """§4.1: the checks on an admin snapshot. A reader that holds nothing installs one
    whenever it names compacted commits, so it checks all of them."""

    def bad():
        raise Refused("snapshot failure", "snapshot")

    state = dict(snap["state"])
    for a, c in snap["compacted"]:
        if c > state.get(a, 0):
            bad()
    if not snap["compacted"]:
        return  # not installed: it would lose nothing the reader lacks
    for ch in snap["chains"]:
        if ch["seq"] != state.get(ch["author"], 0):
            bad()
        names = ch["names"]
        if len(set(names)) != len(names) or any(not 1 <= len(n.encode()) <= MAX_NAME
                                                for n in names):
            bad()
    for rec in snap["records"]:
        stamps = [s for f in rec["fields"] for s in f["siblings"]] + rec["tombstones"] + [
            f["sibling"] for f in rec["firsts"]]
        dots = [[s["author"], s["seq"]] for s in stamps]
        for g in rec.get("ghosts", []):  # version 3 (§13 2.)
            dots += [[g["sibling"]["author"], g["sibling"]["seq"]]] + g["under"] + g["buried"]
        for author, seq in dots:
            # Versions 7 and 9 (§15, §16 2.): who was an admin is the snapshot author's word.
            allowed = version in (7, 9, 11, 13) or may_write(author, rec["collection"], rec["id"])
            if seq > state.get(author, 0) or not allowed:
                bad()


def header_json(magic, version, ds, sender, salt, epoch, signer, grant, grant_format):
    h = {"magic": chr(magic), "version": version, "dataset": hx(ds), "sender": sender,
         "salt": hx(salt)}
    if version in (5, 7, 9, 11, 13):
        h["epoch"] = epoch
        h["grant"] = None if grant is None else {
            "epoch": grant["epoch"], "admin_seq": grant["admin_seq"], "at_ms": grant["at_ms"],
            "removed": grant["removed"], "ephemeral": hx(grant["ephemeral"]),
            "members": [w[0] for w in grant["wraps"]], "signature": hx(grant["signature"])}
    if version in (9, 11, 13):  # §16 2., §12.2: the epochs the opened history lists, if opened
        h["signer"] = signer
    if grant is not None and grant_format == 9:
        h["grant"]["signer"] = grant["signer"]
        h["grant"]["history"] = grant["opened"]
    if grant is not None and version in (11, 13):
        h["grant"]["format"] = grant_format
    return h


def vector(path):
    """Reads a frozen vector (§12): `key: value` lines, a blank line, the bundle."""
    data = open(path, "rb").read()
    cut = data.index(b"\n\n")
    fields = {}
    for line in data[:cut].decode().split("\n"):
        k, _, v = line.partition(": ")
        fields[k.rstrip(":")] = v
    return fields, data[cut + 2:]


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: ferry_decode.py VECTOR\n")
        return 2
    blake3.self_test()
    fields, bundle = vector(argv[1])
    try:
        member = int(fields["member"]) if "member" in fields else None
        secret = bytes.fromhex(fields["member-secret"]) if "member-secret" in fields else None
        signer_key = bytes.fromhex(fields["signer-key"]) if "signer-key" in fields else None
        dictionary = None
        if "dictionary" in fields:  # §18: the dictionary the reader holds, `K HEX`
            k, _, hexed = fields["dictionary"].partition(" ")
            dictionary = (int(k), bytes.fromhex(hexed))
        out = decode(bundle, bytes.fromhex(fields["dataset"]), bytes.fromhex(fields["dataset-key"]),
                     bytes.fromhex(fields["admin-key"]), member, secret, signer_key, dictionary)
    except Refused as e:
        out = {"expect": e.cls, "reason": e.reason}
    sys.stdout.write(json.dumps(out, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
