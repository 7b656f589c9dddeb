//! A writer that keeps only the first characters of what is written to it: the precision
//! of `%.5s` and `{:.5}`, which CPython applies to a str it has made whole. The cut is
//! signalled to the writer that feeds it as an error (flagged by `stopped`), so a long repr
//! stops where the precision does instead of running to its end.

use super::{Out, Reject};

/// Passes on (or, without `inner`, only measures) the first `chars_left` characters of
/// what is written, then stops the writer.
pub(crate) struct Take<'a> {
    inner: Option<&'a mut dyn Out>,
    chars_left: usize,
    /// Bytes passed on or measured.
    bytes: usize,
    /// Characters passed on or measured.
    chars: usize,
    /// Bytes the text may take before it is `OutputTooLarge`.
    budget: usize,
    /// The cut was reached: the writer's error is this signal, not a failure.
    stopped: bool,
}

impl<'a> Take<'a> {
    /// Keeps the first `chars` characters, passing them on to `inner` when there is one.
    pub fn new(inner: Option<&'a mut dyn Out>, chars: usize) -> Self {
        Take {
            inner,
            chars_left: chars,
            bytes: 0,
            chars: 0,
            budget: usize::MAX,
            stopped: false,
        }
    }

    /// Text of more than `budget` bytes is `OutputTooLarge` (against the budget).
    pub fn with_budget(mut self, budget: usize) -> Self {
        self.budget = budget;
        self
    }

    /// Runs `write` through the cut; reaching the cut is success.
    pub fn run(
        &mut self,
        write: impl FnOnce(&mut dyn Out) -> Result<(), Reject>,
    ) -> Result<(), Reject> {
        match write(self) {
            Err(_) if self.stopped => Ok(()),
            other => other,
        }
    }

    /// Characters kept.
    pub fn chars(&self) -> usize {
        self.chars
    }

    /// Whether the text went on past the cut.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    fn stop(&mut self) -> Result<(), Reject> {
        self.stopped = true;
        Err(Reject::OutputTooLarge {
            at_least: 0,
            limit: 0,
        })
    }

    /// Counts `chars` characters of `bytes` bytes against the budget.
    fn count(&mut self, chars: usize, bytes: usize) -> Result<(), Reject> {
        self.chars_left -= chars;
        self.chars += chars;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > self.budget {
            return Err(Reject::OutputTooLarge {
                at_least: self.bytes,
                limit: self.budget,
            });
        }
        Ok(())
    }
}

impl Out for Take<'_> {
    fn push_str(&mut self, s: &str) -> Result<(), Reject> {
        if self.chars_left == 0 {
            return self.stop();
        }
        let (part, n, cut) = match s.char_indices().nth(self.chars_left) {
            Some((i, _)) => (&s[..i], self.chars_left, true),
            None => (s, s.chars().count(), false),
        };
        self.count(n, part.len())?;
        if let Some(o) = self.inner.as_mut() {
            o.push_str(part)?;
        }
        if cut {
            return self.stop();
        }
        Ok(())
    }

    fn push_repeat(&mut self, c: char, n: usize) -> Result<(), Reject> {
        let k = n.min(self.chars_left);
        if n > 0 && k == 0 {
            return self.stop();
        }
        self.count(k, k.saturating_mul(c.len_utf8()))?;
        if let Some(o) = self.inner.as_mut() {
            o.push_repeat(c, k)?;
        }
        if k < n {
            return self.stop();
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Buf;

    #[test]
    fn take_keeps_the_first_characters_and_stops_the_writer() {
        let mut buf = Buf::new(100, 0);
        let mut t = Take::new(Some(&mut buf), 4);
        let r = t.run(|o| {
            o.push_str("日本")?;
            o.push_repeat('x', 5)?;
            o.push_str("never")
        });
        assert_eq!(r, Ok(()));
        assert!(t.stopped());
        assert_eq!((t.chars(), t.len()), (4, 8));
        assert_eq!(buf.as_str(), "日本xx");
    }

    #[test]
    fn take_measures_against_its_budget() {
        let mut t = Take::new(None, 10).with_budget(3);
        let r = t.run(|o| o.push_str("abcd"));
        assert_eq!(
            r,
            Err(Reject::OutputTooLarge {
                at_least: 4,
                limit: 3
            })
        );
        let mut t = Take::new(None, 10);
        assert_eq!(t.run(|o| o.push_str("abc")), Ok(()));
        assert!(!t.stopped());
        assert_eq!(t.chars(), 3);
    }
}
