//! A fast path for the hot message, `command_output_message`: a flat JSON object of string
//! values, as the runtime writes it (compact, `message_type` first).
//!
//! [`command_output`] scans such a frame without serde. On anything it does not expect
//! (whitespace, a non-string value, a duplicate or escaped key, an invalid escape, a control
//! character) it returns `None` and the caller falls back to serde, which then decides; so the
//! fast path only ever accepts frames that serde decodes to the same values. The fuzz target
//! `decode` checks exactly that.

use std::borrow::Cow;

/// The fields of a `command_output_message`: stream, text, command (`None` when absent).
pub(crate) type Fields<'a> = (
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
    Option<Cow<'a, str>>,
);

/// Scans `rest`, the frame after the `{"message_type":"command_output_message",` prefix.
pub(crate) fn command_output(rest: &str) -> Option<Fields<'_>> {
    canonical(rest).or_else(|| any_order(rest))
}

/// The frame as both runtimes write it: `"stream"`, `"text"`, `"command"`, in that order. The
/// keys are compared as whole tokens instead of being scanned as strings.
fn canonical(rest: &str) -> Option<Fields<'_>> {
    let mut at = 0;
    let stream = field(rest, &mut at, br#""stream":"#)?;
    let text = field(rest, &mut at, br#","text":"#)?;
    let command = field(rest, &mut at, br#","command":"#)?;
    (at + 1 == rest.len() && rest.as_bytes()[at] == b'}').then_some((
        Some(stream),
        Some(text),
        Some(command),
    ))
}

/// `token` (a key with its punctuation) at `*at`, then a string value.
fn field<'a>(s: &'a str, at: &mut usize, token: &[u8]) -> Option<Cow<'a, str>> {
    if !s.as_bytes().get(*at..)?.starts_with(token) {
        return None;
    }
    *at += token.len();
    string(s, at)
}

/// Any order of keys, unknown keys skipped.
fn any_order(rest: &str) -> Option<Fields<'_>> {
    let bytes = rest.as_bytes();
    let mut at = 0;
    let (mut stream, mut text, mut command) = (None, None, None);
    loop {
        let key = string(rest, &mut at)?;
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        at += 1;
        let value = string(rest, &mut at)?;
        match &*key {
            "stream" => set(&mut stream, value)?,
            "text" => set(&mut text, value)?,
            "command" => set(&mut command, value)?,
            // A repeated message_type is serde's to judge.
            "message_type" => return None,
            // Unknown fields are ignored, as serde does.
            _ => {}
        }
        match bytes.get(at) {
            Some(b',') => at += 1,
            Some(b'}') if at + 1 == bytes.len() => return Some((stream, text, command)),
            _ => return None,
        }
    }
}

/// Stores a field; `None` for a duplicate, which serde rejects.
fn set<'a>(slot: &mut Option<Cow<'a, str>>, value: Cow<'a, str>) -> Option<()> {
    match slot {
        Some(_) => None,
        None => {
            *slot = Some(value);
            Some(())
        }
    }
}

/// Reads a JSON string starting at `*at` (which must be `"`), advancing past its closing quote.
fn string<'a>(s: &'a str, at: &mut usize) -> Option<Cow<'a, str>> {
    let bytes = s.as_bytes();
    if bytes.get(*at) != Some(&b'"') {
        return None;
    }
    let start = *at + 1;
    let mut i = special(bytes, start);
    match *bytes.get(i)? {
        b'"' => {
            *at = i + 1;
            return Some(Cow::Borrowed(s.get(start..i)?));
        }
        b'\\' => {}
        _ => return None, // a control character
    }
    // Escapes: build the string.
    // The unescaped string is never longer than the rest of the frame: one allocation.
    let mut out = String::with_capacity(bytes.len() - start);
    out.push_str(&s[start..i]);
    loop {
        match *bytes.get(i)? {
            b'"' => {
                *at = i + 1;
                return Some(Cow::Owned(out));
            }
            b'\\' => {
                let esc = *bytes.get(i + 1)?;
                i += 2;
                let c = match esc {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let hi = hex4(bytes.get(i..i + 4)?)?;
                        i += 4;
                        if (0xD800..0xDC00).contains(&hi) {
                            if bytes.get(i..i + 2)? != b"\\u" {
                                return None;
                            }
                            let lo = hex4(bytes.get(i + 2..i + 6)?)?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return None;
                            }
                            i += 6;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                        } else {
                            char::from_u32(hi)?
                        }
                    }
                    _ => return None,
                };
                out.push(c);
            }
            c if c < 0x20 => return None,
            _ => {
                // Copy the run up to the next quote, backslash or control character at once.
                let run_end = special(bytes, i);
                out.push_str(s.get(i..run_end)?);
                i = run_end;
            }
        }
    }
}

/// The index of the first `"`, `\\` or control character at or after `from` (`bytes.len()` if
/// none). Up to [`SWAR_SPAN`] bytes are checked eight at a time in a register: keys and the
/// values of command output are mostly short, and a call into memchr costs more than it saves
/// there. Longer strings go on with memchr and a branch-free pass for control characters.
pub(crate) fn special(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let rest = bytes.get(from..).unwrap_or_default();
    let head = &rest[..rest.len().min(SWAR_SPAN)];
    let mut chunks = head.chunks_exact(8);
    let mut i = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        // Flags each byte that is zero after the xor (or below 0x20); the lowest flag is
        // exact, which is the one taken.
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        let hits = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
        if hits != 0 {
            return from + i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    if head.len() < SWAR_SPAN {
        let tail = chunks.remainder();
        return from
            + i
            + tail
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(tail.len());
    }
    let rest = &rest[i..];
    let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let span = &rest[..end];
    if span.iter().fold(false, |control, &b| control | (b < 0x20)) {
        return from + i + span.iter().position(|&b| b < 0x20).unwrap_or(end);
    }
    from + i + end
}

/// How far [`special`] scans in a register before it hands over to memchr.
const SWAR_SPAN: usize = 256;

fn hex4(digits: &[u8]) -> Option<u32> {
    let mut v = 0;
    for &d in digits {
        v = v * 16 + (d as char).to_digit(16)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(rest: &str) -> Option<(String, String, Option<String>)> {
        let (stream, text, command) = command_output(rest)?;
        Some((
            stream?.into_owned(),
            text?.into_owned(),
            command.map(Cow::into_owned),
        ))
    }

    #[test]
    fn the_canonical_order_and_any_other_agree() {
        let want = Some(("stdout".into(), "a\nb\"c".into(), Some("make".into())));
        for rest in [
            r#""stream":"stdout","text":"a\nb\"c","command":"make"}"#,
            r#""text":"a\nb\"c","command":"make","stream":"stdout"}"#,
            r#""command":"make","extra":"x","stream":"stdout","text":"a\u000ab\"c"}"#,
        ] {
            assert_eq!(fields(rest), want, "{rest}");
        }
        assert!(canonical(r#""text":"t","stream":"s","command":"c"}"#).is_none());
    }

    #[test]
    fn the_canonical_path_refuses_what_serde_would_judge_differently() {
        for rest in [
            // Trailing bytes, a missing brace, a duplicate key after the canonical three.
            r#""stream":"s","text":"t","command":"c"} "#,
            r#""stream":"s","text":"t","command":"c""#,
            r#""stream":"s","text":"t","command":"c","text":"u"}"#,
            // A raw control character in a value.
            "\"stream\":\"s\",\"text\":\"a\u{1}\",\"command\":\"c\"}",
        ] {
            assert!(fields(rest).is_none(), "{rest:?}");
        }
    }

    #[test]
    fn special_finds_the_first_stop_at_any_length() {
        for len in [0, 1, 7, 8, 9, 255, 256, 257, 300, 1000] {
            for stop in ["\"", "\\", "\u{1f}"] {
                let s = format!("{}{stop}tail", "x".repeat(len));
                assert_eq!(special(s.as_bytes(), 0), len, "{len} {stop:?}");
            }
            let plain = "y".repeat(len);
            assert_eq!(special(plain.as_bytes(), 0), len);
        }
    }
}
