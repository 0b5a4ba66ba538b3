//! The multivariant playlist (RFC 8216bis 4.4.6) and the init sections it
//! leads to: EXT-X-MEDIA and EXT-X-STREAM-INF attributes, and the CODECS,
//! RESOLUTION and FRAME-RATE that the init sections imply.

use crate::common::fmp4::{self, Init};
use crate::common::playlist::{Attrs, MediaPlaylist};
use crate::common::*;
use crate::media::fetch_media_res;
use crate::rules::check_playlist_headers;

/// Both renditions' init sections: the response (its bytes prefix a
/// segment for ffprobe) and the parsed tracks.
pub struct Inits {
    pub vinit_r: Resp,
    pub vinit: Init,
    pub ainit_r: Resp,
    pub ainit: Init,
}

/// Checks the multivariant playlist at `master_url`: one audio rendition at
/// `aud_url`, one variant at `src_url`. Returns the variant's attributes.
pub fn check_multivariant(
    f: &Findings,
    http: &Http,
    master_url: &str,
    src_url: &str,
    aud_url: &str,
) -> Attrs {
    let mr = http.get(master_url);
    assert_eq!(mr.status, 200, "GET {master_url}");
    check_playlist_headers(f, &mr, false);
    let mv = parse_multivariant(&mr.text())
        .unwrap_or_else(|e| panic!("master playlist invalid: {e}\n{}", mr.text()));
    let audio_media: Vec<_> = mv
        .media
        .iter()
        .filter(|m| m.get("TYPE") == Some("AUDIO"))
        .collect();
    assert_eq!(
        audio_media.len(),
        1,
        "one EXT-X-MEDIA TYPE=AUDIO expected:\n{}",
        mr.text()
    );
    let am = audio_media[0];
    let group = am
        .quoted("GROUP-ID")
        .expect("EXT-X-MEDIA GROUP-ID (4.4.6.1 REQUIRED)");
    assert!(
        am.quoted("NAME").is_some(),
        "EXT-X-MEDIA NAME is REQUIRED (4.4.6.1)"
    );
    let am_uri = resolve(master_url, am.quoted("URI").expect("audio EXT-X-MEDIA URI"));
    assert_eq!(am_uri, aud_url, "audio rendition URI");
    assert_eq!(
        mv.variants.len(),
        1,
        "one variant (source) expected:\n{}",
        mr.text()
    );
    let va = &mv.variants[0].attrs;
    assert_eq!(
        resolve(master_url, &mv.variants[0].uri),
        src_url,
        "variant URI"
    );
    f.check(
        va.quoted("AUDIO") == Some(group),
        "STREAM-INF AUDIO matches the EXT-X-MEDIA GROUP-ID (4.4.6.2)",
        || format!("{va:?}"),
    );
    let bandwidth: u64 = va
        .get("BANDWIDTH")
        .and_then(|b| b.parse().ok())
        .expect("BANDWIDTH (REQUIRED, 4.4.6.2)");
    let avg_bw: u64 = va
        .get("AVERAGE-BANDWIDTH")
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    f.check(
        avg_bw > 0 && avg_bw <= bandwidth,
        "AVERAGE-BANDWIDTH present and <= BANDWIDTH",
        || format!("BANDWIDTH {bandwidth} AVERAGE-BANDWIDTH {avg_bw}"),
    );
    va.clone()
}

/// Fetches and checks both init sections, and the variant attributes `va`
/// against them. `src_pl` is a source media playlist already fetched.
pub fn check_inits(
    f: &Findings,
    http: &Http,
    src_url: &str,
    aud_url: &str,
    src_pl: &MediaPlaylist,
    va: &Attrs,
) -> Inits {
    let vinit_r = fetch_media_res(
        f,
        http,
        src_url,
        src_pl.map_uri.as_deref().expect("EXT-X-MAP"),
    );
    let vinit = fmp4::parse_init(&vinit_r.body).expect("video init segment parses");
    let aud0 = fetch_media(http, aud_url, "");
    let ainit_r = fetch_media_res(
        f,
        http,
        aud_url,
        aud0.pl.map_uri.as_deref().expect("audio EXT-X-MAP"),
    );
    let ainit = fmp4::parse_init(&ainit_r.body).expect("audio init segment parses");
    assert_eq!(vinit.tracks.len(), 1, "video init has one track");
    assert_eq!(ainit.tracks.len(), 1, "audio init has one track");
    let vt = &vinit.tracks[0];
    let at = &ainit.tracks[0];
    assert_eq!(vt.handler, "vide");
    assert_eq!(at.handler, "soun");
    f.check(
        at.sample_entry == "mp4a" && at.sample_rate == 48000 && at.channels == 2,
        "audio init: mp4a 48 kHz stereo",
        || format!("{at:?}"),
    );
    let codecs = va.quoted("CODECS").unwrap_or("");
    let want_codecs = [vt.codec.as_str(), "mp4a.40.2"];
    let got: Vec<&str> = codecs.split(',').collect();
    f.check(
        got.len() == 2
            && want_codecs
                .iter()
                .all(|c| got.iter().any(|g| g.eq_ignore_ascii_case(c))),
        "CODECS = avc1.PPCCLL from avcC + mp4a.40.2 (4.4.6.2)",
        || format!("CODECS {codecs:?}, init says {want_codecs:?}"),
    );
    f.check(
        va.get("RESOLUTION") == Some("1280x720") && (vt.width, vt.height) == (1280, 720),
        "RESOLUTION matches the source (1280x720)",
        || {
            format!(
                "RESOLUTION {:?}, init {}x{}",
                va.get("RESOLUTION"),
                vt.width,
                vt.height
            )
        },
    );
    let fr: f64 = va
        .get("FRAME-RATE")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    f.check(
        (fr - 30.0).abs() < 0.1,
        "FRAME-RATE matches the source (30)",
        || format!("FRAME-RATE {:?}", va.get("FRAME-RATE")),
    );
    Inits {
        vinit_r,
        vinit,
        ainit_r,
        ainit,
    }
}
