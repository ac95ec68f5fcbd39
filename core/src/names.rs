//! Helpers for names people type: normalisation and "did you mean" suggestions.

/// Lower-case kebab form: `"East Coast (NY2)"` → `east-coast-ny2`, `"UTAH_USA"` → `utah-usa`,
/// `"us-east-1"` stays as it is. Regions and zones are stored in this form so that the same place
/// compares equal however a catalog spelled it.
pub fn slug(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut dash = false;
    for c in raw.trim().chars() {
        if c.is_ascii_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            dash = true;
        }
    }
    out
}

/// Levenshtein distance over case-folded characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `input`, if any is close enough to be a plausible typo (or `input`
/// is a prefix of it).
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = input.to_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let d = if c.to_lowercase().starts_with(&lower) && !lower.is_empty() { 0 } else { edit_distance(input, c) };
            (d, c)
        })
        .filter(|(d, c)| *d <= (c.len() / 2).max(2))
        .min_by_key(|(d, c)| (*d, c.len()))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("East Coast (NY2)"), "east-coast-ny2");
        assert_eq!(slug("UTAH_USA"), "utah-usa");
        assert_eq!(slug("Texas, US, NA"), "texas-us-na");
        assert_eq!(slug("us-east-1"), "us-east-1");
        assert_eq!(slug("  AF-CASABLANCA-1-AD-1 "), "af-casablanca-1-ad-1");
        assert_eq!(slug(""), "");
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("H100", "h100"), 0);
        assert_eq!(edit_distance("H10", "H100"), 1);
        assert_eq!(closest("H10O", ["H100", "A100", "H100-SXM"]), Some("H100"));
        assert_eq!(closest("lamda", ["aws", "lambda", "runpod"]), Some("lambda"));
        assert_eq!(closest("run", ["aws", "lambda", "runpod"]), Some("runpod"));
        assert_eq!(closest("zzzzzzzz", ["aws", "lambda"]), None);
    }
}
