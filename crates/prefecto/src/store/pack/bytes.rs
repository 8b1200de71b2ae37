//! Postcard's integers (varints, zigzag) and texts, written by hand: the
//! writer packs every task run recorded, and serde's generic path cost
//! several times the engine's own work per run.

/// A run's numbers, written on the stack and copied into the body at once
/// (a capacity check per byte cost more than the rest): a tag, two varints
/// of at most 10 bytes, two options of at most 11, a count of at most 5, a
/// state code, and three zeros, 52 bytes at most. Positions are taken modulo its
/// length, which they never reach, so that no write needs a bounds check.
pub(super) struct Head {
    bytes: [u8; 64],
    len: usize,
}

impl Head {
    pub(super) fn new() -> Self {
        Head {
            bytes: [0; 64],
            len: 0,
        }
    }

    pub(super) fn put(&mut self, byte: u8) {
        self.bytes[self.len % 64] = byte;
        self.len += 1;
    }

    /// Postcard's varint: seven bits a byte, least significant first.
    pub(super) fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.put(value as u8 | 0x80);
            value >>= 7;
        }
        self.put(value as u8);
    }

    /// Postcard's signed integers: zigzag, then a varint.
    pub(super) fn signed(&mut self, value: i64) {
        self.varint(zigzag(value));
    }

    pub(super) fn option(&mut self, value: Option<i64>) {
        match value {
            None => self.put(0),
            Some(value) => {
                self.put(1);
                self.signed(value);
            }
        }
    }

    /// `count` zeros: its bytes start as zeros, and each is written once.
    pub(super) fn zeros(&mut self, count: usize) {
        self.len += count;
    }

    pub(super) fn written(&self) -> &[u8] {
        &self.bytes[..self.len.min(64)]
    }
}

/// Postcard's zigzag: small magnitudes, of either sign, to small numbers.
pub(super) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(super) fn put_varint(body: &mut Vec<u8>, value: u64) {
    let mut head = Head::new();
    head.varint(value);
    body.extend_from_slice(head.written());
}

pub(super) fn put_signed(body: &mut Vec<u8>, value: i64) {
    let mut head = Head::new();
    head.signed(value);
    body.extend_from_slice(head.written());
}

pub(super) fn put_text(body: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => body.push(0),
        Some(text) => {
            body.push(1);
            put_varint(body, text.len() as u64);
            body.extend_from_slice(text.as_bytes());
        }
    }
}
