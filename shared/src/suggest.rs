//! "Did you mean ...?" suggestions for misspelled names (fields, clouds, GPUs, instance types).

/// The candidate closest to `input` by edit distance, if it is close enough to be a likely typo.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let needle = input.to_ascii_lowercase();
    let mut best: Option<(&str, f64)> = None;
    for candidate in candidates {
        let score =
            strsim::normalized_damerau_levenshtein(&needle, &candidate.to_ascii_lowercase());
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((candidate, score));
        }
    }
    best.filter(|(_, score)| *score >= 0.5).map(|(c, _)| c)
}

/// ` (did you mean 'x'?)`, or nothing when no candidate is close.
pub fn did_you_mean<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(input, candidates)
        .map(|c| format!(" (did you mean '{c}'?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("V1OO", ["V100", "A100", "T4"]), Some("V100"));
        assert_eq!(
            closest("acclerators", ["accelerators", "cpus"]),
            Some("accelerators")
        );
        assert_eq!(closest("zzzzzz", ["accelerators", "cpus"]), None);
    }
}
