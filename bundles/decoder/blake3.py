# BLAKE3 in pure Python: hash, keyed hash and key derivation, 32 bytes out.
#
# Written for ferry's second bundle decoder after the BLAKE3 paper and the structure of the
# official reference implementation (https://github.com/BLAKE3-team/BLAKE3,
# reference_impl/reference_impl.py, CC0-1.0 / Apache-2.0). Slow (pure Python) but exact;
# the decoder checks it against the published test value below on every run.

IV = [
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
    0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
]
PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
BLOCK_LEN = 64
CHUNK_LEN = 1024
CHUNK_START, CHUNK_END, PARENT, ROOT = 1, 2, 4, 8
KEYED_HASH, DERIVE_KEY_CONTEXT, DERIVE_KEY_MATERIAL = 16, 32, 64
M32 = 0xFFFFFFFF


def _g(s, a, b, c, d, x, y):
    s[a] = (s[a] + s[b] + x) & M32
    t = s[d] ^ s[a]
    s[d] = ((t >> 16) | (t << 16)) & M32
    s[c] = (s[c] + s[d]) & M32
    t = s[b] ^ s[c]
    s[b] = ((t >> 12) | (t << 20)) & M32
    s[a] = (s[a] + s[b] + y) & M32
    t = s[d] ^ s[a]
    s[d] = ((t >> 8) | (t << 24)) & M32
    s[c] = (s[c] + s[d]) & M32
    t = s[b] ^ s[c]
    s[b] = ((t >> 7) | (t << 25)) & M32


def _compress(cv, m, counter, block_len, flags):
    s = list(cv) + IV[:4] + [counter & M32, (counter >> 32) & M32, block_len, flags]
    m = list(m)
    for r in range(7):
        _g(s, 0, 4, 8, 12, m[0], m[1])
        _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5])
        _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9])
        _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13])
        _g(s, 3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[i] for i in PERM]
    for i in range(8):
        s[i] ^= s[i + 8]
        s[i + 8] ^= cv[i]
    return s


def _words(block):
    block = block + bytes(BLOCK_LEN - len(block))
    return [int.from_bytes(block[i:i + 4], "little") for i in range(0, BLOCK_LEN, 4)]


class _Output:
    def __init__(self, cv, words, counter, block_len, flags):
        self.cv, self.words, self.counter = cv, words, counter
        self.block_len, self.flags = block_len, flags

    def chaining_value(self):
        return _compress(self.cv, self.words, self.counter, self.block_len, self.flags)[:8]

    def root_bytes(self, n):
        out = b""
        counter = 0
        while len(out) < n:
            w = _compress(self.cv, self.words, counter, self.block_len, self.flags | ROOT)
            out += b"".join(x.to_bytes(4, "little") for x in w)
            counter += 1
        return out[:n]


class _Chunk:
    def __init__(self, key, counter, flags):
        self.cv, self.counter, self.flags = list(key), counter, flags
        self.block, self.blocks = b"", 0
        self.length = 0

    def _start(self):
        return CHUNK_START if self.blocks == 0 else 0

    def update(self, data):
        while data:
            if len(self.block) == BLOCK_LEN:
                self.cv = _compress(self.cv, _words(self.block), self.counter, BLOCK_LEN,
                                    self.flags | self._start())[:8]
                self.blocks += 1
                self.block = b""
            take = min(BLOCK_LEN - len(self.block), len(data))
            self.block += data[:take]
            self.length += take
            data = data[take:]

    def output(self):
        return _Output(self.cv, _words(self.block), self.counter, len(self.block),
                       self.flags | self._start() | CHUNK_END)


def _parent(left, right, key, flags):
    return _Output(key, left + right, 0, BLOCK_LEN, PARENT | flags)


class Hasher:
    def __init__(self, key=None, flags=0):
        self.key = list(key) if key is not None else list(IV)
        self.flags = flags
        self.chunk = _Chunk(self.key, 0, flags)
        self.stack = []

    def update(self, data):
        data = bytes(data)
        while data:
            if self.chunk.length == CHUNK_LEN:
                cv = self.chunk.output().chaining_value()
                total = self.chunk.counter + 1
                while total & 1 == 0:
                    cv = _parent(self.stack.pop(), cv, self.key, self.flags).chaining_value()
                    total >>= 1
                self.stack.append(cv)
                self.chunk = _Chunk(self.key, self.chunk.counter + 1, self.flags)
            take = min(CHUNK_LEN - self.chunk.length, len(data))
            self.chunk.update(data[:take])
            data = data[take:]
        return self

    def digest(self, n=32):
        out = self.chunk.output()
        for cv in reversed(self.stack):
            out = _parent(cv, out.chaining_value(), self.key, self.flags)
        return out.root_bytes(n)


def _key_words(key):
    return [int.from_bytes(key[i:i + 4], "little") for i in range(0, 32, 4)]


def hash(data):
    return Hasher().update(data).digest()


def keyed_hash(key, data):
    return Hasher(_key_words(key), KEYED_HASH).update(data).digest()


def derive_key(context, material):
    ctx = Hasher(None, DERIVE_KEY_CONTEXT).update(context.encode()).digest()
    return Hasher(_key_words(ctx), DERIVE_KEY_MATERIAL).update(material).digest()


def self_test():
    # Published values (BLAKE3 test_vectors.json, input length 0 and 1025 bytes of i % 251).
    assert hash(b"").hex() == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    data = bytes(i % 251 for i in range(1025))
    assert hash(data).hex().startswith("d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444")
