//! LL-HLS packaging: fMP4 writer, segmenter, playlists and the part store,
//! for the source, its transcoded rungs and audio; and HLS VOD output.
//!
//! Owns the packaging configuration and the module map. Must never do I/O:
//! everything under `package` is sans-IO except the store's waiting, which
//! only awaits a `tokio::sync::watch`, and `vod/fs.rs`, which writes a VOD
//! directory for the offline transcode command.

mod align;
pub mod fmp4;
mod ledger;
pub mod metadata;
mod names;
pub mod packager;
pub mod plan;
pub mod playlist;
pub mod segmenter;
pub mod store;
#[cfg(test)]
pub(crate) mod testmedia;
mod update;
pub mod vod;

#[cfg(test)]
pub(crate) use ledger::RenditionInfo;
pub use packager::{ChannelPackager, RungDecl};
pub use store::{ChannelStore, Encoding, MediaFile, PARKING, PlaylistRequest, StoreError};
pub(crate) use update::Update;
pub use vod::{VodError, VodSummary, VodWriter};

use serde::{Deserialize, Deserializer, de::Error as _};
use std::time::Duration;

/// How a channel is cut into parts and segments and how much stays listed.
///
/// In the config file durations are decimal seconds (`part_target_s = 0.2`).
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackageConfig {
    /// Wanted LL-HLS part duration. The advertised PART-TARGET is this rounded
    /// to whole source frames (see [`plan`]).
    #[serde(
        rename = "part_target_s",
        deserialize_with = "seconds",
        serialize_with = "crate::config::as_seconds"
    )]
    pub part_target: Duration,
    /// Wanted segment duration; EXT-X-TARGETDURATION is this rounded up.
    #[serde(
        rename = "segment_target_s",
        deserialize_with = "seconds",
        serialize_with = "crate::config::as_seconds"
    )]
    pub segment_target: Duration,
    /// Complete segments listed in a media playlist.
    pub playlist_segments: usize,
}

impl Default for PackageConfig {
    fn default() -> Self {
        PackageConfig {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(2),
            playlist_segments: 20,
        }
    }
}

impl PackageConfig {
    /// The configuration with every value pulled into the range where the
    /// spec's rules can hold, so a typo in a config file degrades instead of
    /// producing playlists that players reject.
    pub fn sanitized(&self) -> PackageConfig {
        let segment_target = self
            .segment_target
            .clamp(Duration::from_secs(1), Duration::from_secs(10));
        // At least two parts per segment, or parts buy no latency.
        let part_target = self
            .part_target
            .clamp(Duration::from_millis(50), segment_target / 2);
        let target_duration = target_duration_secs(segment_target);
        // RFC 8216bis 4.4.3.8: "The Skip Boundary MUST be at least six times
        // the Target Duration." The window must be longer than that or a
        // delta update skips nothing; Apple's authoring spec 8.11 also asks
        // for at least six segments.
        let skip_ms = 6_000 * u128::from(target_duration);
        let skip_segments = skip_ms.div_ceil(segment_target.as_millis().max(1));
        let min_segments = usize::try_from(skip_segments)
            .unwrap_or(usize::MAX)
            .saturating_add(3)
            .max(6);
        PackageConfig {
            part_target,
            segment_target,
            playlist_segments: self.playlist_segments.clamp(min_segments, 1000),
        }
    }

    /// EXT-X-TARGETDURATION in seconds: the segment target rounded up, fixed
    /// by configuration because RFC 8216bis 6.2.1 says "The value of the
    /// EXT-X-TARGETDURATION tag in the Media Playlist MUST NOT change".
    pub fn target_duration(&self) -> u32 {
        target_duration_secs(self.segment_target)
    }
}

fn target_duration_secs(segment_target: Duration) -> u32 {
    let ms = segment_target.as_millis().div_ceil(1000);
    u32::try_from(ms).unwrap_or(u32::MAX).max(1)
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = f64::deserialize(d)?;
    if s.is_nan() || s <= 0.0 {
        return Err(D::Error::custom(format!(
            "expected a positive number of seconds, got {s}"
        )));
    }
    Duration::try_from_secs_f64(s).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = PackageConfig::default();
        assert_eq!(c.part_target, Duration::from_millis(200));
        assert_eq!(c.segment_target, Duration::from_secs(2));
        assert_eq!(c.playlist_segments, 20);
        assert_eq!(c.sanitized(), c);
        assert_eq!(c.target_duration(), 2);
    }

    #[test]
    fn deserializes_seconds_and_fills_defaults() {
        let c: PackageConfig = toml::from_str("part_target_s = 0.25").expect("valid config");
        assert_eq!(c.part_target, Duration::from_millis(250));
        assert_eq!(c.segment_target, Duration::from_secs(2));
        assert!(toml::from_str::<PackageConfig>("part_target_s = -1.0").is_err());
        assert!(toml::from_str::<PackageConfig>("part_target = 1").is_err());
    }

    #[test]
    fn sanitize_keeps_the_window_longer_than_the_skip_boundary() {
        let c = PackageConfig {
            part_target: Duration::from_secs(5),
            segment_target: Duration::from_millis(1500),
            playlist_segments: 2,
        }
        .sanitized();
        assert_eq!(c.part_target, Duration::from_millis(750));
        assert_eq!(c.target_duration(), 2);
        assert!(c.playlist_segments as f64 * 1.5 > 12.0);
    }
}
