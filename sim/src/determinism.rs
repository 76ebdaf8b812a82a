//! `sv-sim run --check-determinism`: the same run twice with the same seed, compared. Equal trace
//! hashes mean the two runs wrote the same objects, gave the same answers and saw the same host
//! events in the same order; otherwise the first line where their traces differ is shown, with
//! what came just before it, which is where to look for what the seed does not decide yet.

use std::fmt;

/// Two runs of the same thing.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub hashes: (String, String),
    pub events: (usize, usize),
    pub divergence: Option<Divergence>,
}

/// Where two traces first differ.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// Index of the first differing line.
    pub index: usize,
    pub first: Option<String>,
    pub second: Option<String>,
    /// The lines both runs had just before it.
    pub before: Vec<String>,
}

/// Lines of common history shown before a divergence.
const CONTEXT: usize = 5;

/// Compares two runs: each a trace hash and its trace lines.
pub fn compare(first: (String, Vec<String>), second: (String, Vec<String>)) -> Comparison {
    let (a, b) = (&first.1, &second.1);
    let index =
        a.iter().zip(b).position(|(x, y)| x != y).or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())));
    let divergence = index.map(|index| Divergence {
        index,
        first: a.get(index).cloned(),
        second: b.get(index).cloned(),
        before: a[index.saturating_sub(CONTEXT)..index].to_vec(),
    });
    Comparison { events: (a.len(), b.len()), hashes: (first.0, second.0), divergence }
}

impl Comparison {
    /// The runs were the same, line for line and by hash.
    pub fn same(&self) -> bool {
        self.divergence.is_none() && self.hashes.0 == self.hashes.1
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.same() {
            return writeln!(
                f,
                "Deterministic: both runs have trace hash {} ({} events).",
                self.hashes.0, self.events.0
            );
        }
        writeln!(
            f,
            "NOT deterministic: trace hashes {} and {} ({} and {} events).",
            self.hashes.0, self.hashes.1, self.events.0, self.events.1
        )?;
        match &self.divergence {
            Some(d) => {
                writeln!(f, "The runs diverge at event {}; before it, both had:", d.index + 1)?;
                for line in &d.before {
                    writeln!(f, "    {line}")?;
                }
                writeln!(f, "first run:  {}", d.first.as_deref().unwrap_or("(ended)"))?;
                writeln!(f, "second run: {}", d.second.as_deref().unwrap_or("(ended)"))
            }
            None => writeln!(
                f,
                "Their traces match line by line; what differs is only in what the hash covers besides (the exported files)."
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn the_first_differing_line_is_found_with_what_came_before() {
        let same = compare(("h".into(), lines("a b c")), ("h".into(), lines("a b c")));
        assert!(same.same(), "{same}");
        let differ = compare(("h1".into(), lines("a b c d")), ("h2".into(), lines("a b x d")));
        let d = differ.divergence.as_ref().expect("a divergence");
        assert_eq!((d.index, d.first.as_deref(), d.second.as_deref()), (2, Some("c"), Some("x")));
        assert_eq!(d.before, ["a", "b"]);
        assert!(differ.to_string().contains("diverge at event 3"), "{differ}");
        let shorter = compare(("h1".into(), lines("a b")), ("h2".into(), lines("a b c")));
        assert_eq!(shorter.divergence.map(|d| (d.index, d.first, d.second)), Some((2, None, Some("c".into()))));
    }
}
