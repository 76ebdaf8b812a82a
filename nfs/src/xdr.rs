//! Decoding of XDR (RFC 4506) from a request buffer.
//!
//! Requests come from the network, so every length is checked against what is left of the buffer
//! before anything is allocated or sliced, and variable-length data is borrowed from the buffer
//! instead of copied. (Decoding with `nfs3_types`' `Unpack` would allocate whatever length prefix a
//! client sends, up to 4 GiB per field.) Replies are encoded with `nfs3_types`, which is safe for
//! data we produce ourselves.

/// The buffer ended early or held a value out of range: the RPC answer is `GARBAGE_ARGS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed XDR at byte {offset}")]
pub struct Malformed {
    pub offset: usize,
}

/// A cursor over one request.
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The undecoded rest of the buffer.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    fn malformed(&self) -> Malformed {
        Malformed { offset: self.pos }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.remaining() {
            return Err(self.malformed());
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32(&mut self) -> Result<i32, Malformed> {
        self.u32().map(|v| v as i32)
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok((hi << 32) | lo)
    }

    /// An XDR bool: exactly 0 or 1.
    pub fn bool(&mut self) -> Result<bool, Malformed> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed { offset: self.pos - 4 }),
        }
    }

    /// Fixed-length opaque of `n` bytes plus padding to a multiple of four.
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let data = self.take(n)?;
        self.take(pad(n))?;
        Ok(data)
    }

    /// Variable-length opaque of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], Malformed> {
        let start = self.pos;
        let len = self.u32()? as usize;
        if len > max {
            return Err(Malformed { offset: start });
        }
        self.fixed(len)
    }

    /// Skips a variable-length opaque of at most `max` bytes.
    pub fn skip_opaque(&mut self, max: usize) -> Result<(), Malformed> {
        self.opaque(max).map(|_| ())
    }

    /// Fails unless the whole buffer was consumed; trailing bytes mean a malformed call.
    pub fn finish(&self) -> Result<(), Malformed> {
        if self.remaining() == 0 { Ok(()) } else { Err(self.malformed()) }
    }
}

/// Bytes of padding after `n` bytes of opaque data.
pub fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Appends big-endian XDR values to a reply buffer.
pub trait Encode {
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_bool(&mut self, v: bool);
    fn put_opaque(&mut self, data: &[u8]);
}

impl Encode for Vec<u8> {
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_bool(&mut self, v: bool) {
        self.put_u32(u32::from(v));
    }
    fn put_opaque(&mut self, data: &[u8]) {
        // Lengths we produce are bounded by the reply size limit, far below u32::MAX.
        self.put_u32(data.len() as u32);
        self.extend_from_slice(data);
        self.extend_from_slice(&[0u8; 3][..pad(data.len())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_before_use() {
        // A length prefix of 4 GiB must not allocate or read past the buffer.
        let buf = [0xff, 0xff, 0xff, 0xff, 1, 2];
        assert!(Decoder::new(&buf).opaque(usize::MAX).is_err());
        assert!(Decoder::new(&buf).opaque(64).is_err());
        let ok = [0, 0, 0, 3, b'a', b'b', b'c', 0];
        let mut d = Decoder::new(&ok);
        assert_eq!(d.opaque(8), Ok(&b"abc"[..]));
        assert!(d.finish().is_ok());
    }

    #[test]
    fn bools_are_strict() {
        assert_eq!(Decoder::new(&[0, 0, 0, 1]).bool(), Ok(true));
        assert!(Decoder::new(&[0, 0, 0, 2]).bool().is_err());
    }

    #[test]
    fn encode_pads() {
        let mut out = Vec::new();
        out.put_opaque(b"abcde");
        assert_eq!(out, [0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]);
    }
}
