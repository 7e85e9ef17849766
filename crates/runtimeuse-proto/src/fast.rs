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
    let mut out = String::with_capacity(i - start + 16);
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
/// none). The first 16 bytes (keys and short values end there) are checked eight at a time in
/// a register; longer strings go to memchr, with a branch-free pass for control characters.
fn special(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let rest = bytes.get(from..).unwrap_or_default();
    let mut i = 0;
    while i < 16
        && let Some(chunk) = rest.get(i..i + 8)
    {
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
    let rest = &rest[i.min(rest.len())..];
    let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
    let span = &rest[..end];
    if span.iter().fold(false, |control, &b| control | (b < 0x20)) {
        return from + i + span.iter().position(|&b| b < 0x20).unwrap_or(end);
    }
    from + i + end
}

fn hex4(digits: &[u8]) -> Option<u32> {
    let mut v = 0;
    for &d in digits {
        v = v * 16 + (d as char).to_digit(16)?;
    }
    Some(v)
}
