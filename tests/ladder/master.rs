//! The multivariant playlist of a laddered channel (RFC 8216bis 4.4.6) and
//! the init sections it leads to: which variants are listed, their
//! RESOLUTION, FRAME-RATE, AUDIO group, BANDWIDTH against the ladder's
//! configured bit rates, and CODECS and size against each rung's SPS.

use std::collections::BTreeMap;

use crate::common::fmp4;
use crate::common::playlist::{Attrs, Multivariant};
use crate::common::*;
use crate::h264::{AvcConfig, avc_config};
use crate::rules::{check_media_headers, check_playlist_headers};

/// One video rendition a channel should have.
#[derive(Debug, Clone)]
pub struct Want {
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
    /// Configured (rungs) or published (source) video bit rate, kb/s.
    pub kbps: u32,
}

pub const fn want(name: &'static str, width: u32, height: u32, kbps: u32) -> Want {
    Want {
        name,
        width,
        height,
        kbps,
    }
}

/// The AAC audio the publishers send, for the BANDWIDTH bounds.
const AUDIO_KBPS: u32 = 128;

/// GET and parse the multivariant playlist; panics on a non-200 or a parse
/// error (nothing else can be checked without it).
pub fn fetch(f: &Findings, http: &Http, url: &str) -> Multivariant {
    let r = http.get(url);
    assert_eq!(r.status, 200, "GET {url}: {}", r.text());
    check_playlist_headers(f, &r, false);
    parse_multivariant(&r.text())
        .unwrap_or_else(|e| panic!("{url}: invalid multivariant playlist: {e}\n{}", r.text()))
}

/// Waits until the multivariant playlist lists `n` variants (a rung is
/// listed once its encoder is configured) and returns it with its text.
pub fn wait_variants(http: &Http, url: &str, n: usize) -> (Multivariant, String) {
    let mut last = String::new();
    wait_for(
        std::time::Duration::from_secs(20),
        std::time::Duration::from_millis(250),
        || {
            let r = http.try_get(url).ok()?;
            last = format!("{} {}", r.status, r.text());
            let mv = parse_multivariant(&r.text()).ok()?;
            (r.status == 200 && mv.variants.len() >= n).then(|| (mv, r.text()))
        },
    )
    .unwrap_or_else(|| panic!("{url} never listed {n} variants; last answer: {last}"))
}

/// Checks the variants of `mv` against `wants` (the source first, then the
/// rungs top down) and the one audio rendition. Returns each variant's
/// attributes by rendition name.
pub fn check_variants(
    f: &Findings,
    mv: &Multivariant,
    master_url: &str,
    wants: &[Want],
) -> BTreeMap<String, Attrs> {
    let audio: Vec<&Attrs> = mv
        .media
        .iter()
        .filter(|m| m.get("TYPE") == Some("AUDIO"))
        .collect();
    f.check(audio.len() == 1, "one EXT-X-MEDIA TYPE=AUDIO", || {
        format!("{} audio renditions: {audio:?}", audio.len())
    });
    let group = audio.first().and_then(|a| a.quoted("GROUP-ID"));
    if let Some(a) = audio.first() {
        let uri = a.quoted("URI").map(|u| resolve(master_url, u));
        let want_uri = resolve(master_url, "audio/index.m3u8");
        f.check(
            uri.as_deref() == Some(want_uri.as_str()),
            "audio rendition at /hls/ID/audio/index.m3u8",
            || format!("EXT-X-MEDIA URI {uri:?}"),
        );
    }

    // Rendition name from the variant URI: /hls/ID/<name>/index.m3u8.
    let mut by_name: BTreeMap<String, Attrs> = BTreeMap::new();
    for v in &mv.variants {
        let url = resolve(master_url, &v.uri);
        let name = url
            .strip_prefix(&resolve(master_url, ""))
            .and_then(|rest| rest.strip_suffix("/index.m3u8"))
            .unwrap_or(&url)
            .to_string();
        f.check(
            !by_name.contains_key(&name),
            "each rendition listed once",
            || format!("{name} listed twice"),
        );
        by_name.insert(name, v.attrs.clone());
    }
    let listed: Vec<&str> = by_name.keys().map(String::as_str).collect();
    let mut expected: Vec<&str> = wants.iter().map(|w| w.name).collect();
    expected.sort();
    f.check(
        listed == expected,
        "variants are exactly the source and the ladder's rungs",
        || format!("listed {listed:?}, expected {expected:?}"),
    );

    let mut prev_rung_bw: Option<(&str, u64)> = None;
    for (i, w) in wants.iter().enumerate() {
        let Some(a) = by_name.get(w.name) else {
            continue;
        };
        let res = format!("{}x{}", w.width, w.height);
        f.check(
            a.get("RESOLUTION") == Some(res.as_str()),
            "RESOLUTION of each rendition",
            || {
                format!(
                    "{}: RESOLUTION {:?}, expected {res}",
                    w.name,
                    a.get("RESOLUTION")
                )
            },
        );
        let fr: f64 = a
            .get("FRAME-RATE")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        f.check(
            (fr - 30.0).abs() < 0.1,
            "FRAME-RATE = 30 on every variant (Apple 9.15)",
            || format!("{}: FRAME-RATE {:?}", w.name, a.get("FRAME-RATE")),
        );
        f.check(
            group.is_some() && a.quoted("AUDIO") == group,
            "AUDIO matches the EXT-X-MEDIA GROUP-ID (4.4.6.2)",
            || format!("{}: AUDIO {:?}, group {group:?}", w.name, a.quoted("AUDIO")),
        );
        let bw: u64 = a.get("BANDWIDTH").and_then(|b| b.parse().ok()).unwrap_or(0);
        let avg: u64 = a
            .get("AVERAGE-BANDWIDTH")
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        // Peak segment bit rate of video + audio: within a generous band
        // around the configured video rate (x264 ABR with a VBV on testsrc2).
        let cfg = u64::from(w.kbps) * 1000;
        let lo = cfg * 4 / 10;
        let hi = cfg * 16 / 10 + u64::from(AUDIO_KBPS) * 2000;
        f.check(
            (lo..=hi).contains(&bw),
            "BANDWIDTH plausible for the configured bit rate",
            || {
                format!(
                    "{}: BANDWIDTH {bw} outside [{lo}, {hi}] for {} kb/s video + {AUDIO_KBPS} kb/s audio",
                    w.name, w.kbps
                )
            },
        );
        f.check(
            avg > 0 && avg <= bw,
            "AVERAGE-BANDWIDTH present and <= BANDWIDTH",
            || format!("{}: BANDWIDTH {bw} AVERAGE-BANDWIDTH {avg}", w.name),
        );
        if i > 0 {
            // Rungs top down: each needs less bandwidth than the one above.
            if let Some((pn, pbw)) = prev_rung_bw {
                f.check(bw < pbw, "BANDWIDTH decreases down the ladder", || {
                    format!("{}: {bw} >= {pn}: {pbw}", w.name)
                });
            }
            prev_rung_bw = Some((w.name, bw));
        }
    }
    by_name
}

/// A rendition's init section, parsed.
pub struct InitInfo {
    pub bytes: Vec<u8>,
    pub avc: AvcConfig,
}

/// Fetches each rendition's init section and checks its SPS (size and
/// profile/level) against `wants` and the variant's CODECS.
pub fn check_inits(
    f: &Findings,
    http: &Http,
    node: &Node,
    id: &str,
    wants: &[Want],
    variants: &BTreeMap<String, Attrs>,
) -> BTreeMap<String, InitInfo> {
    let mut out = BTreeMap::new();
    for w in wants {
        let media_url = node.media_url(id, w.name);
        let pl = fetch_media(http, &media_url, "").pl;
        let map = pl
            .map_uri
            .unwrap_or_else(|| panic!("{media_url}: no EXT-X-MAP"));
        let init_url = resolve(&media_url, &map);
        let r = http.get(&init_url);
        assert_eq!(r.status, 200, "GET {init_url}");
        check_media_headers(f, &r);
        let avc =
            avc_config(&r.body).unwrap_or_else(|e| panic!("{init_url}: cannot read the SPS: {e}"));
        f.check(
            (avc.width, avc.height) == (w.width, w.height),
            "SPS picture size of each rendition",
            || {
                format!(
                    "{}: SPS says {}x{}, expected {}x{}",
                    w.name, avc.width, avc.height, w.width, w.height
                )
            },
        );
        let track = fmp4::parse_init(&r.body)
            .ok()
            .and_then(|i| i.tracks.into_iter().next());
        f.check(
            track
                .as_ref()
                .is_some_and(|t| (t.width as u32, t.height as u32) == (w.width, w.height)),
            "sample entry width/height = SPS size",
            || format!("{}: {track:?}", w.name),
        );
        if let Some(a) = variants.get(w.name) {
            let codecs = a.quoted("CODECS").unwrap_or("");
            let got: Vec<&str> = codecs.split(',').collect();
            f.check(
                got.len() == 2
                    && got.iter().any(|c| c.eq_ignore_ascii_case(&avc.codec))
                    && got.iter().any(|c| c.eq_ignore_ascii_case("mp4a.40.2")),
                "CODECS = avc1.PPCCLL of the rendition's SPS + mp4a.40.2 (4.4.6.2)",
                || format!("{}: CODECS {codecs:?}, SPS says {}", w.name, avc.codec),
            );
        }
        out.insert(
            w.name.to_string(),
            InitInfo {
                bytes: r.body.clone(),
                avc,
            },
        );
    }
    out
}
