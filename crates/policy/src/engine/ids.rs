//! The identifier table: every identifier a policy names (iOS bundle ids, Android
//! packages, signing certificates, code digests, publisher accounts), and where each
//! leads, with the keys stored inline.
//!
//! A catalogue of 100,000 apps has some 400,000 identifiers, and a store's traffic asks
//! for them in no particular order, so a lookup costs what it waits for in memory: a
//! read at a random place in a table of tens of megabytes misses the cache and the
//! TLB, some 200 ns. Here a lookup reads one bucket of 256 bytes (four lines, fetched
//! together), which holds the keys themselves and where they lead.
//! A map of `String` keys reads a bucket and then the key's own allocation; hashbrown's
//! `HashTable` over an arena of keys reads control bytes, a bucket, then the arena.
//!
//! App ids match whatever their letter case: their keys are folded to lower case, and
//! the request's id is folded as it is hashed and compared, without a copy. Where the
//! policy spells a key with capitals, a bit per byte says which, to tell whether the
//! request's spelling differs. Digests are kept as their 32 bytes; they and publisher
//! accounts are compared exactly (both sides are in their normal form). An entry too
//! long for a bucket (an id of more than about 100 bytes) keeps its key in a side
//! arena.

/// What an identifier names, in the table's keys: the same text may be an iOS id of one
/// app and an Android package of another.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum Kind {
    Ios = 0,
    Android = 1,
    SigningCert = 2,
    CodeSha256 = 3,
    AppleAccount = 4,
    GoogleAccount = 5,
}

impl Kind {
    /// App ids match whatever their letter case; the others are in a normal form.
    fn folds_case(self) -> bool {
        matches!(self, Kind::Ios | Kind::Android)
    }

    /// SHA-256 digests, kept as their bytes.
    fn is_digest(self) -> bool {
        matches!(self, Kind::SigningCert | Kind::CodeSha256)
    }
}

/// Where an identifier leads: an app (or an entity, for a publisher account), its
/// coverage, and its owner (the entity itself for an account).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Target {
    pub target: u32,
    pub coverage: u32,
    pub owner: u32,
}

const BUCKET: usize = 256;
/// A bucket: whether an entry that hashes here or earlier went on to a later bucket,
/// how many entries it holds, a tag (eight bits of the hash) and the offset of each,
/// the entries, and (the last byte) how many bytes of the bucket they use. A lookup
/// compares its tag with all the bucket's at once and reads only the entries whose tag
/// is its own: on a hit, almost always just the one it is after. It reads the last byte
/// first and a byte of each of the two lines between at once (see [`LINE`]), so that the
/// bucket's four lines of the processor's cache are fetched together rather than each when
/// it is reached. Reading the first and last alone counted on the processor to fetch the
/// two between with them, as Intel's prefetcher does for pairs of lines; on the AMD EPYC
/// machine of the benchmarks it did not, and an entry in a middle line was a second wait
/// for memory, after the tags. Four lines to a bucket: of some 400,000 identifiers at the
/// fill below, more than nine in ten are in the bucket their hash chooses, and most others
/// in the next.
type Bucket = [u8; BUCKET];

/// The size of a line of the processor's cache (64 bytes on x86-64 and most others).
const LINE: usize = 64;
const _: () = assert!(BUCKET == 4 * LINE);

/// A table at least this large (bytes) has pages of its own, which Linux is advised to
/// back with huge pages (`MADV_HUGEPAGE`, honoured where transparent huge pages are
/// enabled, as by default, for regions so advised): where they are, a lookup in a table of
/// tens of megabytes mostly finds its page's address in the processor's translation cache
/// instead of walking the page tables, which in a virtual machine is a walk of two sets.
/// Smaller tables, or where no such memory can be had, are on the heap.
const OWN_PAGES: usize = HUGE_PAGE;
/// The size of a huge page on x86-64 and most other processors Linux runs on.
const HUGE_PAGE: usize = 2 << 20;

/// The buckets' memory, each bucket aligned to its size (so that it spans four lines,
/// not five): zeroed, then written as entries are inserted.
#[derive(Debug)]
struct Buckets {
    memory: Memory,
    /// Where the first bucket starts in `memory`, and how many there are.
    start: usize,
    count: usize,
}

#[derive(Debug)]
enum Memory {
    Pages(memmap2::MmapMut),
    Heap(Vec<u8>),
}

impl Buckets {
    fn zeroed(count: usize) -> Buckets {
        let bytes = count * BUCKET;
        // A huge page backs a whole aligned stretch of its size: the map is made larger by
        // one, and the buckets start at the first such boundary in it.
        let pages = (bytes >= OWN_PAGES)
            .then(|| memmap2::MmapMut::map_anon(bytes.next_multiple_of(HUGE_PAGE) + HUGE_PAGE))
            .and_then(Result::ok);
        let (memory, align) = match pages {
            Some(pages) => {
                // Advice only: without huge pages the table works the same.
                #[cfg(target_os = "linux")]
                let _ = pages.advise(memmap2::Advice::HugePage);
                (Memory::Pages(pages), HUGE_PAGE)
            }
            None => (Memory::Heap(vec![0; bytes + BUCKET - 1]), BUCKET),
        };
        // (`align_offset` may say it cannot align: the buckets then work unaligned.)
        let start = memory.bytes().as_ptr().align_offset(align).min(align - 1);
        Buckets {
            memory,
            start,
            count,
        }
    }

    #[inline]
    fn all(&self) -> &[Bucket] {
        self.memory.bytes()[self.start..][..self.count * BUCKET]
            .as_chunks()
            .0
    }

    #[inline]
    fn all_mut(&mut self) -> &mut [Bucket] {
        self.memory.bytes_mut()[self.start..][..self.count * BUCKET]
            .as_chunks_mut()
            .0
    }
}

impl Memory {
    #[inline]
    fn bytes(&self) -> &[u8] {
        match self {
            Memory::Pages(m) => m,
            Memory::Heap(v) => v,
        }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Memory::Pages(m) => m,
            Memory::Heap(v) => v,
        }
    }
}

const OVERFLOW: usize = 0;
const COUNT: usize = 1;
/// The most entries a bucket holds.
const ENTRIES: usize = 14;
const TAGS: usize = 2;
const OFFSETS: usize = TAGS + ENTRIES;
const FIRST: usize = OFFSETS + ENTRIES;
const END: usize = BUCKET - 1;

/// An entry: kind (or [`DEAD`]), flags, key length (u16), target, coverage, owner (u32
/// each, little-endian), then the key, then (with [`SPELLED`]) a bit per key byte, set
/// where the policy's spelling has a capital; or (with [`LONG`]) instead of both, where
/// they start in the side arena.
const HEADER: usize = 16;
const SPELLED: u8 = 1;
const LONG: u8 = 2;
/// The kind of an entry replaced by a later insert of the same key.
const DEAD: u8 = u8::MAX;
/// The longest entry kept whole in a bucket: a bucket holds at least two.
const INLINE: usize = (END - FIRST) / 2;

/// How full the buckets' entry bytes are made, on average, when the table is sized, and
/// how full they may become before it grows (percent).
const FILL: usize = 65;
const MAX_FILL: usize = 85;
/// Tables smaller than this are made emptier.
const SMALL: usize = 1 << 20;

/// The identifiers of a policy.
#[derive(Debug)]
pub(crate) struct IdTable {
    buckets: Buckets,
    /// Keys (and spellings) of entries too long for a bucket.
    long: Vec<u8>,
    /// The bytes of the buckets' entries.
    used: usize,
}

impl Default for IdTable {
    fn default() -> IdTable {
        IdTable::with_capacity(0, 0)
    }
}

impl IdTable {
    /// A table for `keys` identifiers whose keys take about `bytes` bytes in all (see
    /// [`IdTable::key_bytes`]); it grows if given more.
    pub(crate) fn with_capacity(keys: usize, bytes: usize) -> IdTable {
        let entries = keys * HEADER + bytes;
        let mut buckets = (entries * 100 / FILL / (END - FIRST)).max(1);
        // A small table is given room to spare, so that hardly any lookup goes on to a
        // second bucket; memory matters only for large ones.
        if buckets * BUCKET < SMALL {
            buckets = (buckets * 4).min(SMALL / BUCKET);
        }
        IdTable {
            buckets: Buckets::zeroed(buckets),
            long: Vec::new(),
            used: 0,
        }
    }

    /// The bytes a key of `id` takes in a table sized by [`IdTable::with_capacity`].
    pub(crate) fn key_bytes(kind: Kind, id: &str) -> usize {
        let len = if kind.is_digest() { 32 } else { id.len() };
        len + len.div_ceil(8)
    }

    /// Adds an identifier; one already there (the same key, letter case aside for app
    /// ids) is replaced, as a map's insert would. An identifier a request could not
    /// carry (a digest that is not 64 lower-case hex digits) is left out.
    pub(crate) fn insert(&mut self, kind: Kind, id: &str, found: Target) {
        let mut digest = [0; 32];
        let Some(key) = Key::new(kind, id, &mut digest) else {
            return;
        };
        if let Some((b, at, _)) = self.find(key) {
            self.buckets.all_mut()[b][at] = DEAD;
        }
        let spelling = spelling(kind, id.as_bytes());
        let bytes = key.len() + spelling.as_ref().map_or(0, Vec::len);
        let (flags, size) = if HEADER + bytes <= INLINE {
            (spelling.as_ref().map_or(0, |_| SPELLED), HEADER + bytes)
        } else {
            (LONG | spelling.as_ref().map_or(0, |_| SPELLED), HEADER + 4)
        };
        if (self.used + size) * 100 > self.buckets.count * (END - FIRST) * MAX_FILL {
            self.grow();
        }
        let mut entry = Vec::with_capacity(size);
        entry.push(kind as u8);
        entry.push(flags);
        entry.extend_from_slice(&(key.len() as u16).to_le_bytes());
        for field in [found.target, found.coverage, found.owner] {
            entry.extend_from_slice(&field.to_le_bytes());
        }
        // App ids' keys in lower case; the spelling's capitals after them.
        let mut rest = key.bytes().to_vec();
        if kind.folds_case() {
            rest.make_ascii_lowercase();
        }
        rest.extend(spelling.iter().flatten());
        if flags & LONG != 0 {
            entry.extend_from_slice(&(self.long.len() as u32).to_le_bytes());
            self.long.extend_from_slice(&rest);
        } else {
            entry.extend_from_slice(&rest);
        }
        let mut b = self.home(key.hash);
        for _ in 0..self.buckets.count {
            let bucket = &mut self.buckets.all_mut()[b];
            let (count, used) = (usize::from(bucket[COUNT]), usize::from(bucket[END]));
            if count < ENTRIES && FIRST + used + size <= END {
                let at = FIRST + used;
                bucket[at..at + size].copy_from_slice(&entry);
                bucket[TAGS + count] = tag(key.hash);
                bucket[OFFSETS + count] = at as u8;
                bucket[COUNT] = (count + 1) as u8;
                bucket[END] = (used + size) as u8;
                self.used += size;
                return;
            }
            bucket[OVERFLOW] = 1;
            b = self.next(b);
        }
        // No bucket had room for it.
        self.grow();
        self.insert(kind, id, found);
    }

    /// Where an identifier leads, and whether it differs in letter case from the
    /// policy's spelling (app ids only; the others must match exactly).
    #[inline(always)]
    pub(crate) fn get(&self, kind: Kind, id: &str) -> Option<(Target, bool)> {
        let Hit(a, b) = self.lookup(kind, id);
        (b >> 33 != 0).then_some((
            Target {
                target: a as u32,
                coverage: (a >> 32) as u32,
                owner: b as u32,
            },
            b >> 32 & 1 != 0,
        ))
    }

    /// [`IdTable::get`]'s answer, packed in two words so that it is handed back in
    /// registers (a larger answer goes through memory, in pieces the caller then reads
    /// whole: the processor cannot forward such stores to the load, and waits).
    #[inline]
    fn lookup(&self, kind: Kind, id: &str) -> Hit {
        let mut digest = [0; 32];
        let Some(key) = Key::new(kind, id, &mut digest) else {
            return Hit(0, 0);
        };
        let Some((b, at, exact)) = self.find(key) else {
            return Hit(0, 0);
        };
        let entry = &self.buckets.all()[b][at..];
        let differs = if entry[1] & SPELLED != 0 {
            let n = key.len();
            let capitals = if entry[1] & LONG != 0 {
                let at = u32_at(entry, HEADER) as usize + n;
                &self.long[at..at + n.div_ceil(8)]
            } else {
                &entry[HEADER + n..HEADER + n + n.div_ceil(8)]
            };
            spelling_differs(capitals, key.bytes())
        } else {
            !exact
        };
        Hit(
            u64::from(u32_at(entry, 4)) | u64::from(u32_at(entry, 8)) << 32,
            u64::from(u32_at(entry, 12)) | u64::from(differs) << 32 | 1 << 33,
        )
    }

    /// The bucket and offset of the key's entry, and whether the key is exactly the
    /// request's (not only letter case aside).
    #[inline]
    fn find(&self, key: Key<'_>) -> Option<(usize, usize, bool)> {
        let mut b = self.home(key.hash);
        let n = key.len();
        let tags = ONES * u64::from(tag(key.hash));
        let buckets = self.buckets.all();
        for _ in 0..buckets.len() {
            let bucket = &buckets[b];
            // The last byte first, and the two lines between read at once (see
            // `Bucket`): `black_box` keeps reads whose values are not used. No entry
            // reaches past the last byte.
            let end = FIRST + usize::from(bucket[END]);
            std::hint::black_box((bucket[LINE], bucket[2 * LINE]));
            let count = usize::from(bucket[COUNT]);
            // A byte of `candidates` is set where the tag is the key's: exactly the
            // lowest such, possibly others above it; each is checked against the key.
            let mut candidates = [
                has_zero_byte(word(&bucket[TAGS..TAGS + 8]) ^ tags),
                has_zero_byte(word(&bucket[TAGS + 8..TAGS + 16]) ^ tags),
            ];
            for (half, bits) in candidates.iter_mut().enumerate() {
                while *bits != 0 {
                    let i = half * 8 + (bits.trailing_zeros() / 8) as usize;
                    *bits &= *bits - 1;
                    if i >= count {
                        break;
                    }
                    let at = usize::from(bucket[OFFSETS + i]);
                    let entry = &bucket[at..end];
                    let len = usize::from(u16::from_le_bytes([entry[2], entry[3]]));
                    if entry[0] != key.kind as u8 || len != n {
                        continue;
                    }
                    let stored = if entry[1] & LONG != 0 {
                        let from = u32_at(entry, HEADER) as usize;
                        &self.long[from..from + n]
                    } else {
                        &entry[HEADER..HEADER + n]
                    };
                    if let Some(exact) = key.matches(stored) {
                        return Some((b, at, exact));
                    }
                }
            }
            if bucket[OVERFLOW] == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// The bucket a hash starts at: from its high bits (the tag is its low byte).
    #[inline]
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.buckets.count as u128) >> 64) as usize
    }

    /// The bucket after `b`, the first after the last.
    #[inline]
    fn next(&self, b: usize) -> usize {
        if b + 1 == self.buckets.count {
            0
        } else {
            b + 1
        }
    }

    /// Twice the buckets, every live entry placed again.
    fn grow(&mut self) {
        let twice = Buckets::zeroed(self.buckets.count * 2);
        let old = std::mem::replace(&mut self.buckets, twice);
        let long = std::mem::take(&mut self.long);
        self.used = 0;
        for bucket in old.all() {
            for i in 0..usize::from(bucket[COUNT]) {
                let entry = &bucket[usize::from(bucket[OFFSETS + i])..];
                let (flags, len) = (
                    entry[1],
                    usize::from(u16::from_le_bytes([entry[2], entry[3]])),
                );
                let Some(kind) = kind_of(entry[0]) else {
                    continue;
                };
                let source = if flags & LONG != 0 {
                    &long[u32_at(entry, HEADER) as usize..]
                } else {
                    &entry[HEADER..]
                };
                let key = &source[..len];
                let capitals = (flags & SPELLED != 0).then(|| &source[len..len + len.div_ceil(8)]);
                let found = Target {
                    target: u32_at(entry, 4),
                    coverage: u32_at(entry, 8),
                    owner: u32_at(entry, 12),
                };
                self.insert_stored(kind, key, capitals, found);
            }
        }
    }

    /// Inserts a key as stored (folded, digests as bytes), with its capitals.
    fn insert_stored(&mut self, kind: Kind, key: &[u8], capitals: Option<&[u8]>, found: Target) {
        let spelled: Vec<u8> = match capitals {
            Some(bits) => key
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if bits[i / 8] & 1 << (i % 8) != 0 {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    }
                })
                .collect(),
            None => key.to_vec(),
        };
        let text = if kind.is_digest() {
            key.iter().fold(String::with_capacity(64), |mut s, b| {
                s.push(char::from(HEX[usize::from(b >> 4)]));
                s.push(char::from(HEX[usize::from(b & 15)]));
                s
            })
        } else {
            String::from_utf8_lossy(&spelled).into_owned()
        };
        self.insert(kind, &text, found);
    }
}

/// A lookup's answer: target and coverage; owner, whether the spelling differs (bit 32)
/// and whether found (bit 33).
struct Hit(u64, u64);

/// A key's tag in its bucket: the hash's low byte.
#[inline]
fn tag(hash: u64) -> u8 {
    hash as u8
}

/// The high bit of the lowest zero byte of `w` set, and perhaps of bytes above it.
#[inline]
fn has_zero_byte(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGH
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn kind_of(byte: u8) -> Option<Kind> {
    [
        Kind::Ios,
        Kind::Android,
        Kind::SigningCert,
        Kind::CodeSha256,
        Kind::AppleAccount,
        Kind::GoogleAccount,
    ]
    .into_iter()
    .find(|k| *k as u8 == byte)
}

#[inline]
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(w)
}

/// For an app id the policy spells with capitals, a bit per byte, set at each capital.
fn spelling(kind: Kind, id: &[u8]) -> Option<Vec<u8>> {
    if !kind.folds_case() || !id.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let mut bits = vec![0u8; id.len().div_ceil(8)];
    for (i, b) in id.iter().enumerate() {
        if b.is_ascii_uppercase() {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    Some(bits)
}

/// Whether a request's id (that matched the key whatever its case) is spelled otherwise
/// than the policy, whose capitals are the bits set in `capitals`.
fn spelling_differs(capitals: &[u8], id: &[u8]) -> bool {
    id.iter()
        .enumerate()
        .any(|(i, b)| b.is_ascii_uppercase() != (capitals[i / 8] & 1 << (i % 8) != 0))
}

/// An identifier as the table keys it: its kind, its bytes (a digest's decoded) and its
/// hash.
#[derive(Clone, Copy)]
struct Key<'a> {
    kind: Kind,
    bytes: &'a [u8],
    hash: u64,
}

impl<'a> Key<'a> {
    /// The key of `id`; a digest is decoded into `digest`.
    #[inline]
    fn new(kind: Kind, id: &'a str, digest: &'a mut [u8; 32]) -> Option<Key<'a>> {
        let bytes: &[u8] = if kind.is_digest() {
            *digest = decode_digest(id.as_bytes())?;
            digest
        } else {
            id.as_bytes()
        };
        Some(Key {
            kind,
            bytes,
            hash: hash(kind, bytes),
        })
    }

    #[inline]
    fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    #[inline]
    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether a stored key (folded to lower case for app ids) is this one, and if so
    /// whether exactly.
    #[inline]
    fn matches(&self, stored: &[u8]) -> Option<bool> {
        let id = self.bytes();
        let folds = self.kind.folds_case();
        let mut exact = true;
        let mut same = |k: u64, i: u64| {
            if k == i {
                return true;
            }
            exact = false;
            folds && k == lower(i)
        };
        let n = id.len();
        if n < 8 {
            return same(short(stored), short(id)).then_some(exact);
        }
        // Word by word; the last word overlaps the one before when the length is not a
        // multiple of eight.
        let mut at = 0;
        while at + 8 < n {
            if !same(word(&stored[at..at + 8]), word(&id[at..at + 8])) {
                return None;
            }
            at += 8;
        }
        same(word(&stored[n - 8..]), word(&id[n - 8..])).then_some(exact)
    }
}

/// The 32 bytes of a digest written as 64 lower-case hex digits (its normal form), or
/// `None` for any other text.
#[inline]
fn decode_digest(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let valid = hex.iter().fold(true, |ok, &c| {
        ok & (c.is_ascii_digit() | (b'a'..=b'f').contains(&c))
    });
    if !valid {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        // `0`..`9` are 0x30..0x39, `a`..`f` 0x61..0x66: the low nibble, plus 9 for letters.
        let nibble = |c: u8| (c & 0x0f) + 9 * (c >> 6);
        *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
    }
    Some(out)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Each byte of `w` in ASCII lower case (bytes outside `A`..=`Z` unchanged), as
/// `u8::to_ascii_lowercase` on each.
#[inline]
fn lower(w: u64) -> u64 {
    let low7 = w & !HIGH;
    // The high bit of each byte: its low seven bits are at least `A`, more than `Z`.
    let at_least_a = low7 + ONES * (0x80 - u64::from(b'A'));
    let above_z = low7 + ONES * (0x80 - u64::from(b'Z') - 1);
    let upper = at_least_a & !above_z & !w & HIGH;
    w | upper >> 2
}

/// Eight bytes as a little-endian word.
#[inline]
pub(crate) fn word(chunk: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(chunk);
    u64::from_le_bytes(w)
}

/// Fewer than eight bytes as a word, padded with zeros.
#[inline]
pub(crate) fn short(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |w, &b| w << 8 | u64::from(b))
}

/// Multiplies and folds the product's halves together.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    p as u64 ^ (p >> 64) as u64
}

// Digits of pi, as rustc-hash takes them.
const SEED1: u64 = 0x243f_6a88_85a3_08d3;
const SEED2: u64 = 0x1319_8a2e_0370_7344;
const MIX: u64 = 0xa409_3822_299f_31d0;
const K: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hash of an identifier of a kind, folded to lower case: equal for ids that differ
/// only in letter case, so that one probe finds an app id however it is written. The
/// shape of rustc-hash's string hash (sixteen bytes a multiplication, the last sixteen
/// read overlapping), each word folded to lower case, and a last multiplication so that
/// the high bits, which choose the bucket, depend on every byte.
#[inline]
fn hash(kind: Kind, bytes: &[u8]) -> u64 {
    let len = bytes.len();
    let mut s0 = SEED1 ^ kind as u64;
    let mut s1 = SEED2 ^ len as u64;
    if len < 8 {
        s0 ^= lower(short(bytes));
    } else if len <= 16 {
        s0 ^= lower(word(&bytes[..8]));
        s1 ^= lower(word(&bytes[len - 8..]));
    } else {
        let mut bulk = &bytes[..len - 1];
        while let Some((chunk, rest)) = bulk.split_first_chunk::<16>() {
            let t = fold(
                s0 ^ lower(word(&chunk[..8])),
                MIX ^ lower(word(&chunk[8..])),
            );
            s0 = s1;
            s1 = t;
            bulk = rest;
        }
        s0 ^= lower(word(&bytes[len - 16..len - 8]));
        s1 ^= lower(word(&bytes[len - 8..]));
    }
    fold(fold(s0, s1), K)
}

/// In a compiled image (see [`crate::Policy::to_image`]) the table is its buckets as they
/// are, each without its unused bytes: the byte giving how many bytes its entries use,
/// the bucket's head (overflow, count, tags, offsets), then those bytes. Reading it back
/// copies bytes; nothing is hashed again.
impl serde::Serialize for IdTable {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(self.used + self.buckets.count * (FIRST + 1));
        for bucket in self.buckets.all() {
            let used = usize::from(bucket[END]);
            bytes.push(bucket[END]);
            bytes.extend_from_slice(&bucket[..FIRST + used.min(END - FIRST)]);
        }
        serde::Serialize::serialize(
            &(self.buckets.count as u64, Bytes(&bytes), Bytes(&self.long)),
            serializer,
        )
    }
}

impl<'de> serde::Deserialize<'de> for IdTable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<IdTable, D::Error> {
        use serde::de::Error as _;
        let (count, packed, long): (u64, ByteBuf<'de>, ByteBuf<'de>) =
            serde::Deserialize::deserialize(deserializer)?;
        let count = usize::try_from(count).map_err(D::Error::custom)?;
        // Each bucket takes at least its head: a count beyond that is a damaged image, not
        // a reason to allocate.
        if count == 0 || count > packed.0.len() / (FIRST + 1) {
            return Err(D::Error::custom(format!(
                "identifier table of {count} buckets in {} bytes",
                packed.0.len()
            )));
        }
        let mut buckets = Buckets::zeroed(count);
        let mut rest: &[u8] = &packed.0;
        let mut used_total = 0;
        for (b, bucket) in buckets.all_mut().iter_mut().enumerate() {
            let Some((&used, after)) = rest.split_first() else {
                return Err(D::Error::custom(format!(
                    "identifier table ends at bucket {b}"
                )));
            };
            let used = usize::from(used);
            if FIRST + used > END || after.len() < FIRST + used {
                return Err(D::Error::custom(format!(
                    "identifier table bucket {b}: {used} bytes of entries do not fit"
                )));
            }
            bucket[..FIRST + used].copy_from_slice(&after[..FIRST + used]);
            bucket[END] = used as u8;
            used_total += used;
            rest = &after[FIRST + used..];
        }
        if !rest.is_empty() {
            return Err(D::Error::custom(format!(
                "identifier table: {} bytes after the last bucket",
                rest.len()
            )));
        }
        Ok(IdTable {
            buckets,
            long: long.0.into_owned(),
            used: used_total,
        })
    }
}

/// Bytes written as one byte string (serde writes a `Vec<u8>` element by element).
struct Bytes<'a>(&'a [u8]);

impl serde::Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// A byte string read back: borrowed from the image where the format allows.
struct ByteBuf<'de>(std::borrow::Cow<'de, [u8]>);

impl<'de> serde::Deserialize<'de> for ByteBuf<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ByteBuf<'de>, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ByteBuf<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<ByteBuf<'de>, E> {
                Ok(ByteBuf(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf<'de>, E> {
                Ok(ByteBuf(std::borrow::Cow::Owned(v.to_vec())))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf<'de>, E> {
                Ok(ByteBuf(std::borrow::Cow::Owned(v)))
            }
        }
        deserializer.deserialize_bytes(Visitor)
    }
}

impl IdTable {
    /// Checks a table read from an image: every bucket's entries within it (or within the
    /// side arena), of a known kind and key length, each leading where `leads` allows;
    /// so that no lookup reads out of bounds. Says what is wrong where.
    pub(crate) fn check(&self, leads: &dyn Fn(Target) -> Result<(), String>) -> Result<(), String> {
        for (b, bucket) in self.buckets.all().iter().enumerate() {
            let count = usize::from(bucket[COUNT]);
            let end = FIRST + usize::from(bucket[END]);
            if count > ENTRIES || end > END {
                return Err(format!("bucket {b}: {count} entries, {end} bytes"));
            }
            for i in 0..count {
                let at = usize::from(bucket[OFFSETS + i]);
                let wrong = |what: &str| Err(format!("bucket {b}, entry {i}: {what}"));
                if at < FIRST || at + HEADER > end {
                    return wrong("its head is outside the bucket's entries");
                }
                let entry = &bucket[at..end];
                let (flags, n) = (
                    entry[1],
                    usize::from(u16::from_le_bytes([entry[2], entry[3]])),
                );
                if entry[0] == DEAD {
                    continue;
                }
                let Some(kind) = kind_of(entry[0]) else {
                    return wrong("of no kind");
                };
                if flags & !(SPELLED | LONG) != 0 || (flags & SPELLED != 0 && !kind.folds_case()) {
                    return wrong("unknown flags");
                }
                if kind.is_digest() && n != 32 {
                    return wrong("a digest of other than 32 bytes");
                }
                let stored = n + if flags & SPELLED != 0 {
                    n.div_ceil(8)
                } else {
                    0
                };
                let fits = if flags & LONG != 0 {
                    HEADER + 4 <= entry.len()
                        && (u32_at(entry, HEADER) as usize)
                            .checked_add(stored)
                            .is_some_and(|e| e <= self.long.len())
                } else {
                    HEADER + stored <= entry.len()
                };
                if !fits {
                    return wrong("its key does not fit");
                }
                let found = Target {
                    target: u32_at(entry, 4),
                    coverage: u32_at(entry, 8),
                    owner: u32_at(entry, 12),
                };
                leads(found).or_else(|why| wrong(&why))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(target: u32) -> Target {
        Target {
            target,
            coverage: target + 100,
            owner: target + 200,
        }
    }

    fn table() -> IdTable {
        IdTable::with_capacity(0, 0)
    }

    #[test]
    fn lower_case_is_ascii_lower_case_byte_by_byte() {
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b, b'A', b'z', b'@', b'[', 0x80 | b'A', b'Z', b'`']);
            let folded = lower(w).to_le_bytes();
            assert_eq!(folded[0], b.to_ascii_lowercase(), "{b:#x}");
            assert_eq!(
                &folded[1..],
                &[b'a', b'z', b'@', b'[', 0x80 | b'A', b'z', b'`']
            );
        }
    }

    #[test]
    fn a_short_id_is_its_bytes_padded_with_zeros() {
        assert_eq!(short(b""), 0);
        assert_eq!(short(b"ab"), u64::from_le_bytes(*b"ab\0\0\0\0\0\0"));
        assert_eq!(short(b"abcdefg"), u64::from_le_bytes(*b"abcdefg\0"));
    }

    #[test]
    fn ids_that_differ_only_in_letter_case_hash_alike() {
        for len in 0..40 {
            let id: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let upper = id.to_ascii_uppercase();
            assert_eq!(
                hash(Kind::Ios, id.as_bytes()),
                hash(Kind::Ios, upper.as_bytes())
            );
            assert_ne!(
                hash(Kind::Ios, id.as_bytes()),
                hash(Kind::Android, id.as_bytes())
            );
        }
    }

    #[test]
    fn digests_are_decoded_from_lower_case_hex_only() {
        let hex = "0123456789abcdef".repeat(4);
        let bytes = decode_digest(hex.as_bytes()).unwrap();
        assert_eq!(bytes[..8], [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        assert_eq!(decode_digest(hex.to_ascii_uppercase().as_bytes()), None);
        assert_eq!(decode_digest(&hex.as_bytes()[1..]), None);
        assert_eq!(decode_digest("g".repeat(64).as_bytes()), None);
        assert_eq!(decode_digest(":".repeat(64).as_bytes()), None);
    }

    #[test]
    fn app_ids_are_found_whatever_their_case_and_say_whether_it_differs() {
        let mut table = table();
        table.insert(Kind::Ios, "com.Acme.Chat", to(1));
        table.insert(Kind::Android, "com.acme.chat", to(2));
        assert_eq!(table.get(Kind::Ios, "com.Acme.Chat"), Some((to(1), false)));
        assert_eq!(table.get(Kind::Ios, "com.acme.chat"), Some((to(1), true)));
        assert_eq!(table.get(Kind::Ios, "COM.ACME.CHAT"), Some((to(1), true)));
        assert_eq!(table.get(Kind::Ios, "com.Acme.ChaT"), Some((to(1), true)));
        assert_eq!(
            table.get(Kind::Android, "com.acme.chat"),
            Some((to(2), false))
        );
        assert_eq!(
            table.get(Kind::Android, "com.Acme.chat"),
            Some((to(2), true))
        );
        assert_eq!(table.get(Kind::Ios, "com.acme.cha"), None);
        assert_eq!(table.get(Kind::Ios, "com.acme.chat2"), None);
        assert_eq!(table.get(Kind::AppleAccount, "com.acme.chat"), None);
    }

    #[test]
    fn long_ids_are_found_through_the_side_arena() {
        let mut table = table();
        let long = format!("com.acme.{}.Chat", "x".repeat(200));
        table.insert(Kind::Ios, &long, to(1));
        table.insert(Kind::Ios, &long.to_ascii_lowercase()[1..], to(2));
        assert_eq!(table.get(Kind::Ios, &long), Some((to(1), false)));
        assert_eq!(
            table.get(Kind::Ios, &long.to_ascii_lowercase()),
            Some((to(1), true))
        );
        assert_eq!(
            table.get(Kind::Ios, &long.to_ascii_lowercase()[1..]),
            Some((to(2), false))
        );
        assert_eq!(table.get(Kind::Ios, &long[..long.len() - 1]), None);
    }

    #[test]
    fn digests_and_accounts_match_exactly() {
        let mut table = table();
        let digest = "ab".repeat(32);
        table.insert(Kind::SigningCert, &digest, to(1));
        table.insert(Kind::AppleAccount, "ABCDE12345", to(2));
        table.insert(Kind::GoogleAccount, "7", to(3));
        assert_eq!(table.get(Kind::SigningCert, &digest), Some((to(1), false)));
        assert_eq!(
            table.get(Kind::SigningCert, &digest.to_ascii_uppercase()),
            None
        );
        assert_eq!(table.get(Kind::SigningCert, &"ab".repeat(31)), None);
        assert_eq!(table.get(Kind::CodeSha256, &digest), None);
        assert_eq!(
            table.get(Kind::AppleAccount, "ABCDE12345"),
            Some((to(2), false))
        );
        assert_eq!(table.get(Kind::AppleAccount, "abcde12345"), None);
        assert_eq!(table.get(Kind::GoogleAccount, "ABCDE12345"), None);
        assert_eq!(table.get(Kind::GoogleAccount, "7"), Some((to(3), false)));
        assert_eq!(table.get(Kind::GoogleAccount, "77"), None);
    }

    #[test]
    fn an_identifier_given_again_replaces_the_first_as_a_map_would() {
        let mut table = table();
        table.insert(Kind::Ios, "com.acme.chat", to(1));
        table.insert(Kind::Ios, "com.ACME.chat", to(2));
        assert_eq!(table.get(Kind::Ios, "com.acme.chat"), Some((to(2), true)));
        assert_eq!(table.get(Kind::Ios, "com.ACME.chat"), Some((to(2), false)));
        table.insert(Kind::Ios, "com.acme.chat", to(3));
        assert_eq!(table.get(Kind::Ios, "com.ACME.chat"), Some((to(3), true)));
    }

    #[test]
    fn many_identifiers_of_every_length_survive_growth() {
        let mut table = IdTable::with_capacity(10, 100);
        let id = |i: usize| format!("com.v{i}.{}", "X".repeat(i % 70));
        let digest = |i: usize| format!("{i:064x}");
        for i in 0..20_000 {
            table.insert(Kind::Android, &id(i), to(i as u32));
            table.insert(Kind::CodeSha256, &digest(i), to(i as u32 + 1));
        }
        for i in 0..20_000 {
            assert_eq!(
                table.get(Kind::Android, &id(i)),
                Some((to(i as u32), false))
            );
            let lower = id(i).to_ascii_lowercase();
            assert_eq!(
                table.get(Kind::Android, &lower),
                Some((to(i as u32), i % 70 != 0))
            );
            assert_eq!(table.get(Kind::Android, &format!("{}y", id(i))), None);
            assert_eq!(table.get(Kind::Ios, &id(i)), None);
            assert_eq!(
                table.get(Kind::CodeSha256, &digest(i)),
                Some((to(i as u32 + 1), false))
            );
        }
        // Grown past `OWN_PAGES`: pages of its own (on Linux), each bucket aligned to its
        // size, as a small table's on the heap.
        assert!(table.buckets.count * BUCKET >= OWN_PAGES);
        #[cfg(target_os = "linux")]
        assert!(matches!(table.buckets.memory, Memory::Pages(_)));
        let small = IdTable::with_capacity(10, 100);
        assert!(matches!(small.buckets.memory, Memory::Heap(_)));
        for t in [&table, &small] {
            assert!(
                t.buckets
                    .all()
                    .iter()
                    .all(|b| b.as_ptr().addr() % BUCKET == 0)
            );
            assert_eq!(t.buckets.all().len(), t.buckets.count);
        }
        // Read back from an image, it answers alike.
        let image = postcard::to_allocvec(&table).unwrap();
        let read: IdTable = postcard::from_bytes(&image).unwrap();
        #[cfg(target_os = "linux")]
        assert!(matches!(read.buckets.memory, Memory::Pages(_)));
        for i in 0..20_000 {
            let lower = id(i).to_ascii_lowercase();
            assert_eq!(
                read.get(Kind::Android, &lower),
                Some((to(i as u32), i % 70 != 0))
            );
            assert_eq!(
                read.get(Kind::CodeSha256, &digest(i)),
                Some((to(i as u32 + 1), false))
            );
        }
    }

    #[test]
    fn short_identifiers_fill_a_bucket_past_its_first_eight_tags() {
        let mut table = table();
        let id = |i: usize| format!("{i:x}");
        for i in 0..4_000 {
            table.insert(Kind::Ios, &id(i), to(i as u32));
        }
        // Entries of up to 19 bytes: some buckets hold more than the eight tags of the
        // first word, so that a lookup goes on to the second.
        let most = table.buckets.all().iter().map(|b| b[COUNT]).max();
        assert!(most.is_some_and(|m| usize::from(m) > 8), "{most:?}");
        // The hash spreads them: few buckets sent an entry on to the next (67 of 512 here).
        let overflowed = table
            .buckets
            .all()
            .iter()
            .filter(|b| b[OVERFLOW] != 0)
            .count();
        assert!(
            overflowed * 3 < table.buckets.count,
            "{overflowed} overflowed"
        );
        let mut digest = [0; 32];
        let far = (0..4_000)
            .map(|i| {
                let id = id(i);
                let key = Key::new(Kind::Ios, &id, &mut digest).unwrap();
                let (b, _, _) = table.find(key).unwrap();
                (b + table.buckets.count - table.home(key.hash)) % table.buckets.count
            })
            .max();
        // An entry with no room in its bucket is in one of the next few (3 here), and the
        // table grew only as its fill asked (512 buckets here).
        assert!(far.is_some_and(|f| f <= 4), "{far:?} buckets from home");
        assert!(
            table.buckets.count <= 1_024,
            "{} buckets",
            table.buckets.count
        );
        for i in 0..4_000 {
            assert_eq!(table.get(Kind::Ios, &id(i)), Some((to(i as u32), false)));
            assert_eq!(table.get(Kind::Android, &id(i)), None);
        }
        assert_eq!(table.get(Kind::Ios, &id(4_000)), None);
    }
}
