//! The runtime's check of a handshake's token: a pure function of the values the head carries,
//! for every server of the protocol (the tokio pump and the runtime's HTTP front use it).

/// Whether a handshake presents `token`: `authorization` holds the values of its
/// `Authorization` headers, `query` its URL's query (without `?`).
///
/// Accepted: `Bearer <token>` (the scheme in any case, spaces around it) or a percent-encoded
/// `token` query parameter, compared in time that depends on the lengths only. Every token
/// presented must be right, and each way at most once: a repeated `token` parameter or
/// `Authorization` header is refused, whatever its values (a proxy or a log may see only one
/// of them).
pub fn authorized(authorization: &[&[u8]], query: Option<&str>, token: &str) -> bool {
    let params: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "token")
        .map(|(_, v)| v)
        .collect();
    if authorization.len() > 1 || params.len() > 1 || authorization.len() + params.len() == 0 {
        return false;
    }
    let bearer_ok = authorization.iter().all(|v| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .is_some_and(|(scheme, t)| {
                scheme.eq_ignore_ascii_case("bearer") && same(t.trim().as_bytes(), token.as_bytes())
            })
    });
    let param_ok = params
        .iter()
        .all(|v| percent_decode(v).is_some_and(|v| same(&v, token.as_bytes())));
    bearer_ok && param_ok
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(!x);
    }
    diff == 0
}

/// Decodes `%XX` escapes and `+` (a space, in a query string); `None` for a bad escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(auth: &[&str], query: &str, token: &str) -> bool {
        let auth: Vec<&[u8]> = auth.iter().map(|a| a.as_bytes()).collect();
        authorized(&auth, Some(query), token)
    }

    #[test]
    fn token_variants() {
        let t = "s3cret/+&=x";
        assert!(check(&["Bearer s3cret/+&=x"], "", t));
        assert!(check(&["bearer s3cret/+&=x"], "", t));
        assert!(check(&["BEARER  s3cret/+&=x "], "", t));
        assert!(check(&[], "token=s3cret%2F%2B%26%3Dx", t));
        assert!(check(&[], "a=1&token=s3cret%2f%2b%26%3dx", t));
        assert!(!check(&["Basic s3cret/+&=x"], "", t));
        assert!(!check(&["Bearer s3cret"], "", t));
        assert!(!check(&[], "token=s3cret%2", t));
        assert!(!check(&[], "token=s3cret/+&=x", t));
        assert!(!check(&[], "", t));
        assert!(!authorized(&[], None, t));
        // Repeated or contradicting tokens are refused, whichever comes first.
        let r = "token=s3cret%2F%2B%26%3Dx";
        assert!(!check(&[], &format!("token=wrong&{r}"), t));
        assert!(!check(&[], &format!("{r}&token=wrong"), t));
        assert!(!check(&[], &format!("{r}&{r}"), t));
        assert!(!check(&["Bearer wrong"], r, t));
        assert!(!check(&["Bearer s3cret/+&=x"], "token=wrong", t));
        assert!(check(&["Bearer s3cret/+&=x"], r, t));
        assert!(!check(&["Bearer s3cret/+&=x", "Bearer s3cret/+&=x"], "", t));
    }

    #[test]
    fn same_compares_whole_values() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"ab", b"abc"));
        assert!(!same(b"abc", b"ab"));
        assert!(same(b"", b""));
    }
}
