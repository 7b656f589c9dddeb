//! A small text buffer on the stack, for the short pieces the fast paths make (an `i64`'s
//! digits, a float's repr): writing them there costs no allocation, and a piece that does
//! not fit is an ordinary error the caller answers by taking the general path.

use super::{Out, Reject};

/// Up to `N` bytes of UTF-8 text.
pub(crate) struct StackStr<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackStr<N> {
    pub fn new() -> Self {
        StackStr {
            buf: [0; N],
            len: 0,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so the bytes are always UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl<const N: usize> Out for StackStr<N> {
    #[inline]
    fn push_str(&mut self, s: &str) -> Result<(), Reject> {
        let end = self.len + s.len();
        let Some(dst) = self.buf.get_mut(self.len..end) else {
            return Err(Reject::OutputTooLarge {
                at_least: end,
                limit: N,
            });
        };
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// The digits of `m` in `radix` (8, 10 or 16), no sign or prefix, right-aligned in `buf`;
/// returns where they start. 22 bytes hold a u64 in octal.
pub(crate) fn u64_digits(m: u64, radix: u32, upper: bool, buf: &mut [u8; 22]) -> &str {
    let table: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let radix = u64::from(radix);
    let mut i = buf.len();
    let mut m = m;
    loop {
        i -= 1;
        buf[i] = table[(m % radix) as usize];
        m /= radix;
        if m == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

/// The length of `str(v)`, sign included.
pub(crate) fn i64_str_len(v: i64) -> usize {
    let m = v.unsigned_abs();
    let digits = match m.checked_ilog10() {
        Some(d) => d as usize + 1,
        None => 1,
    };
    digits + usize::from(v < 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_digits_match_std_formatting() {
        let mut b = [0u8; 22];
        for v in [0, 7, -7, 10, 99, -100, i64::MAX, i64::MIN, 1234567890123] {
            let sign = if v < 0 { "-" } else { "" };
            let digits = u64_digits(v.unsigned_abs(), 10, false, &mut b);
            assert_eq!(format!("{sign}{digits}"), v.to_string());
            assert_eq!(i64_str_len(v), v.to_string().len());
        }
        assert_eq!(
            u64_digits(u64::MAX, 8, false, &mut b),
            format!("{:o}", u64::MAX)
        );
        assert_eq!(u64_digits(255, 16, true, &mut b), "FF");
        assert_eq!(u64_digits(0, 16, false, &mut b), "0");
    }

    #[test]
    fn stack_str_refuses_what_does_not_fit() {
        let mut s = StackStr::<4>::new();
        assert!(s.push_str("abc").is_ok());
        assert!(s.push_str("de").is_err());
        assert_eq!(s.as_str(), "abc");
    }
}
