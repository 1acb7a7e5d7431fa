//! Completion indexes of Indexed Jobs: the compressed list kube keeps in
//! status.completedIndexes ("0-2,5,7-8") and the index a pod carries.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

/// The annotation (and label) naming a pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// A pod's completion index, if it has a valid one.
pub fn of_pod(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()?
        .get(INDEX_KEY)?
        .parse()
        .ok()
        .filter(|i| *i >= 0)
}

/// Parses "0-2,5" (ignoring what does not parse, and indexes beyond `limit`).
pub fn parse(s: &str, limit: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            out.extend((a.max(0)..=b.min(limit - 1)).filter(|i| *i < limit));
        }
    }
    out
}

/// Formats indexes as kube writes them: ascending, consecutive runs as ranges.
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_round_trip_as_ranges() {
        let s = parse("0-2,5,7-8", 10);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 5, 7, 8]);
        assert_eq!(format(&s), "0-2,5,7-8");
        assert_eq!(format(&parse("3,4", 10)), "3-4");
        assert_eq!(format(&parse("8-12", 10)), "8-9");
        assert_eq!(format(&BTreeSet::new()), "");
    }
}
