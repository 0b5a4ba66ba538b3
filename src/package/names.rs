//! Media file names: built for playlists and parsed back from request paths.
//!
//! Owns the naming scheme. Media responses are cached as immutable, so a name
//! must never be reused for different bytes: every name carries the stream
//! id (base-36 start time in ms) and the media sequence number, which never
//! repeats within a store. Parsing must accept nothing it would not build.

/// A media file a playlist can name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaName {
    /// `init-<sid>-<version>.mp4`
    Init { sid: String, version: u32 },
    /// `<sid>-<msn>.m4s`
    Segment { sid: String, msn: u64 },
    /// `<sid>-<msn>.<part>.m4s`
    Part { sid: String, msn: u64, part: u32 },
}

pub fn init(sid: &str, version: u32) -> String {
    format!("init-{sid}-{version}.mp4")
}

pub fn segment(sid: &str, msn: u64) -> String {
    format!("{sid}-{msn}.m4s")
}

pub fn part(sid: &str, msn: u64, part: u32) -> String {
    format!("{sid}-{msn}.{part}.m4s")
}

/// A stream id from the stream's start time: base-36 milliseconds.
pub fn stream_id(ms: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = ms;
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    // Only ASCII digits and letters were pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// Parses a request's file name; `None` for anything not built above.
pub fn parse(file: &str) -> Option<MediaName> {
    if let Some(rest) = file
        .strip_prefix("init-")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        let (sid, version) = rest.split_once('-')?;
        return Some(MediaName::Init {
            sid: sid_ok(sid)?.to_owned(),
            version: number(version)?,
        });
    }
    let rest = file.strip_suffix(".m4s")?;
    let (sid, rest) = rest.split_once('-')?;
    let sid = sid_ok(sid)?.to_owned();
    match rest.split_once('.') {
        None => Some(MediaName::Segment {
            sid,
            msn: number(rest)?,
        }),
        Some((msn, part)) => Some(MediaName::Part {
            sid,
            msn: number(msn)?,
            part: number(part)?,
        }),
    }
}

fn sid_ok(sid: &str) -> Option<&str> {
    let ok = !sid.is_empty()
        && sid.len() <= 13
        && sid
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    ok.then_some(sid)
}

/// A decimal number as this module writes it: no sign, no leading zeros.
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let sid = stream_id(1_700_000_000_123);
        assert_eq!(sid, "loyw3v5n");
        assert_eq!(stream_id(0), "0");
        for (name, parsed) in [
            (
                init(&sid, 2),
                MediaName::Init {
                    sid: sid.clone(),
                    version: 2,
                },
            ),
            (
                segment(&sid, 41),
                MediaName::Segment {
                    sid: sid.clone(),
                    msn: 41,
                },
            ),
            (
                part(&sid, 41, 0),
                MediaName::Part {
                    sid: sid.clone(),
                    msn: 41,
                    part: 0,
                },
            ),
        ] {
            assert_eq!(parse(&name), Some(parsed), "{name}");
        }
    }

    #[test]
    fn rejects_what_it_never_writes() {
        for bad in [
            "",
            "index.m3u8",
            "init-abc.mp4",
            "init-ABC-1.mp4",
            "abc-01.m4s",
            "abc-+1.m4s",
            "abc-1.2.3.m4s",
            "-1.m4s",
            "abc-99999999999999999999999.m4s",
            "../abc-1.m4s",
            "abc-1.m4s.mp4",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
