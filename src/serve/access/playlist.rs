//! A private channel's playlists as served: the viewer's token carried on to every URI
//! they name, and the variants a `max-height` claim hides left out.

use super::TOKEN_PARAM;
use std::collections::HashSet;
/// Appends the token to every URI a playlist names: each URI line and each
/// `URI="..."` attribute (EXT-X-MAP, EXT-X-PART, EXT-X-PRELOAD-HINT,
/// EXT-X-RENDITION-REPORT, EXT-X-MEDIA), so a player that only follows
/// URIs sends it with every request.
pub fn rewrite_playlist(text: &str, token: &str) -> String {
    let param = format!("{TOKEN_PARAM}={}", encode_query(token));
    let with = |uri: &str| {
        let sep = if uri.contains('?') { '&' } else { '?' };
        format!("{uri}{sep}{param}")
    };
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => match b.strip_suffix('\r') {
                Some(b2) => (b2, "\r\n"),
                None => (b, "\n"),
            },
            None => (line, ""),
        };
        if body.is_empty() {
            out.push_str(line);
            continue;
        }
        if !body.starts_with('#') {
            out.push_str(&with(body));
        } else {
            let mut rest = body;
            while let Some(i) = rest.find("URI=\"") {
                let start = i + 5;
                let Some(len) = rest[start..].find('"') else {
                    break;
                };
                out.push_str(&rest[..start]);
                out.push_str(&with(&rest[start..start + len]));
                rest = &rest[start + len..];
            }
            out.push_str(rest);
        }
        out.push_str(end);
    }
    out
}

/// Leaves out of a multivariant playlist the variants taller than
/// `max_height` (their EXT-X-STREAM-INF and URI line). If that would leave
/// none, the shortest stays, so the token still plays.
pub fn limit_height(text: &str, max_height: u32) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let height = |l: &str| -> Option<u32> {
        let r = l.split("RESOLUTION=").nth(1)?;
        let r = r.split(',').next()?;
        r.split('x').nth(1)?.trim().parse().ok()
    };
    let variants: Vec<(usize, u32)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("#EXT-X-STREAM-INF:"))
        .filter_map(|(i, l)| Some((i, height(l)?)))
        .collect();
    let mut drop: HashSet<usize> = variants
        .iter()
        .filter(|(_, h)| *h > max_height)
        .map(|(i, _)| *i)
        .collect();
    if drop.len() == variants.len()
        && let Some((keep, _)) = variants.iter().min_by_key(|(_, h)| *h)
    {
        drop.remove(keep);
    }
    let mut out = String::with_capacity(text.len());
    let mut skip_uri = false;
    for (i, l) in lines.iter().enumerate() {
        if drop.contains(&i) {
            skip_uri = true;
            continue;
        }
        if skip_uri && !l.starts_with('#') && !l.is_empty() {
            skip_uri = false;
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Percent-encodes all but RFC 3986 unreserved characters (a JWT is
/// base64url and dots, so it passes unchanged).
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
