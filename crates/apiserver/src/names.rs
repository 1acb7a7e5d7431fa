//! kube's name and label rules (DNS-1123 labels and subdomains, DNS-1035 labels,
//! qualified names, label values), each answering kube's message on failure.

/// DNS-1123 label: at most 63 lower-case alphanumerics or '-', alphanumeric at both ends.
pub fn dns1123_label(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then(|| {
        if s.len() > 63 {
            "must be no more than 63 characters".to_string()
        } else {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".to_string()
        }
    })
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    (!ok).then(|| {
        if s.len() > 253 {
            "must be no more than 253 characters".to_string()
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string()
        }
    })
}

/// DNS-1035 label (service names): a DNS-1123 label starting with a letter.
pub fn dns1035_label(s: &str) -> Option<String> {
    let ok = dns1123_label(s).is_none() && s.starts_with(|c: char| c.is_ascii_lowercase());
    (!ok).then(|| {
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string()
    })
}

fn name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A qualified name (label and annotation keys): `[prefix/]name`.
pub fn qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if dns1123_subdomain(p).is_some() {
            return Some("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
        }
    }
    (!name_part(name)).then(|| {
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string()
    })
}

/// A label value: empty, or at most 63 characters like a name part.
pub fn label_value(s: &str) -> Option<String> {
    (!s.is_empty() && !name_part(s)).then(|| {
        if s.len() > 63 {
            "must be no more than 63 characters".to_string()
        } else {
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string()
        }
    })
}

/// A ConfigMap or Secret key.
pub fn config_key(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != "..";
    (!ok).then(|| "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string())
}

/// `generateName` + 5 random characters from kube's alphabet (no vowels, no
/// look-alikes).
pub fn generate(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let base: String = prefix.chars().take(63 - 5).collect();
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

/// IANA service name (a named port): at most 15 lower-case alphanumerics or '-', at
/// least one letter, no '-' at either end or twice in a row.
pub fn iana_svc_name(s: &str) -> Option<String> {
    if s.len() > 15 {
        return Some("must be no more than 15 characters".into());
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Some(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
        );
    }
    if s.contains("--") {
        return Some("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        return Some("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must not begin or end with a hyphen".into());
    }
    None
}

/// Why `name` cannot be a path segment (kube's rule for names like RBAC's, which may
/// hold colons): not "." or "..", and no "/" or "%".
pub fn path_segment(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            return Some(format!("may not contain '{bad}'"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kube_rules() {
        assert!(dns1123_subdomain("web-1.example").is_none());
        assert!(dns1123_subdomain("Web").is_some());
        assert!(dns1123_label("a.b").is_some());
        assert!(dns1035_label("1abc").is_some());
        assert!(dns1035_label("abc-1").is_none());
        assert!(qualified_name("app.kubernetes.io/name").is_none());
        assert!(qualified_name("-x").is_some());
        assert!(label_value("").is_none());
        assert!(label_value(&"a".repeat(64)).is_some());
        assert!(config_key("a.b_C-d").is_none());
        let g = generate("web-");
        assert!(g.starts_with("web-") && g.len() == 9);
    }
}
