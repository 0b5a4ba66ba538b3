//! ABR ladder presets: which rungs a channel gets for a given source size.
//!
//! Pure planning, no media: a preset (from config or built in) plus the
//! source's size gives the transcoded rungs, top down. The source itself is
//! always the top rung, passed through untouched.

use crate::transcode::frame::Size;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum LadderError {
    #[error("unknown ladder {0:?}; known: {1}")]
    Unknown(String, String),
    #[error("ladder {ladder:?}: {why}")]
    Invalid { ladder: String, why: String },
}

/// One rung as an operator writes it in config.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RungSpec {
    /// Rendition name in URLs and metrics, e.g. `720p`.
    pub name: String,
    pub height: u32,
    pub bitrate_kbps: u32,
}

/// A transcoded rung planned for one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rung {
    pub name: String,
    pub size: Size,
    pub bitrate_bps: u64,
}

/// Built-in and configured ladders by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ladders {
    ladders: BTreeMap<String, Vec<RungSpec>>,
}

pub const PASSTHROUGH: &str = "passthrough";
pub const STANDARD: &str = "standard";

fn rung(name: &str, height: u32, bitrate_kbps: u32) -> RungSpec {
    RungSpec {
        name: name.into(),
        height,
        bitrate_kbps,
    }
}

impl Default for Ladders {
    fn default() -> Self {
        let mut ladders = BTreeMap::new();
        ladders.insert(PASSTHROUGH.to_string(), Vec::new());
        ladders.insert(
            STANDARD.to_string(),
            vec![
                rung("720p", 720, 3000),
                rung("480p", 480, 1200),
                rung("360p", 360, 700),
                rung("160p", 160, 250),
            ],
        );
        Ladders { ladders }
    }
}

/// Names a rung may not take: they are the source and audio renditions.
const RESERVED: [&str; 2] = ["source", "audio"];

impl Ladders {
    /// The built-in ladders plus `custom` (which may replace `standard` but
    /// not `passthrough`).
    pub fn with_custom(custom: &BTreeMap<String, Vec<RungSpec>>) -> Result<Self, LadderError> {
        let mut l = Ladders::default();
        for (name, rungs) in custom {
            let invalid = |why: String| LadderError::Invalid {
                ladder: name.clone(),
                why,
            };
            if name == PASSTHROUGH {
                return Err(invalid("the passthrough ladder cannot be redefined".into()));
            }
            let mut seen = std::collections::BTreeSet::new();
            for r in rungs {
                let ok_name = !r.name.is_empty()
                    && r.name.len() <= 32
                    && r.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok_name || RESERVED.contains(&r.name.as_str()) {
                    return Err(invalid(format!(
                        "rung name {:?} must be 1-32 of [A-Za-z0-9_-] and not source/audio",
                        r.name
                    )));
                }
                if !seen.insert(r.name.as_str()) {
                    return Err(invalid(format!("rung {:?} appears twice", r.name)));
                }
                if !(16..=4320).contains(&r.height) || r.bitrate_kbps < 16 {
                    return Err(invalid(format!(
                        "rung {:?}: height 16..=4320 and at least 16 kb/s",
                        r.name
                    )));
                }
            }
            l.ladders.insert(name.clone(), rungs.clone());
        }
        Ok(l)
    }

    /// Every rung name of every ladder.
    pub fn rung_names(&self) -> std::collections::BTreeSet<&str> {
        self.ladders
            .values()
            .flatten()
            .map(|r| r.name.as_str())
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.ladders.contains_key(name)
    }

    pub fn check(&self, name: &str) -> Result<(), LadderError> {
        if self.contains(name) {
            Ok(())
        } else {
            Err(LadderError::Unknown(
                name.to_string(),
                self.ladders.keys().cloned().collect::<Vec<_>>().join(", "),
            ))
        }
    }

    /// The transcoded rungs of ladder `name` for a `source`-sized input, top
    /// down: every rung strictly below the source's height (never upscale),
    /// keeping the source's aspect ratio with the width rounded to even.
    pub fn plan(&self, name: &str, source: Size) -> Result<Vec<Rung>, LadderError> {
        self.check(name)?;
        let mut rungs: Vec<Rung> = self.ladders[name]
            .iter()
            .filter(|r| r.height < source.height)
            .map(|r| Rung {
                name: r.name.clone(),
                size: Size::new(even_width(source, r.height), r.height),
                bitrate_bps: u64::from(r.bitrate_kbps) * 1000,
            })
            .collect();
        rungs.sort_by_key(|r| std::cmp::Reverse(r.size.height));
        Ok(rungs)
    }
}

/// Width for `height` at the source's aspect ratio, rounded to the nearest
/// even number (4:2:0 chroma needs even sizes), at least 2.
fn even_width(source: Size, height: u32) -> u32 {
    let exact = f64::from(source.width) * f64::from(height) / f64::from(source.height.max(1));
    let even = (exact / 2.0).round() as u32 * 2;
    even.max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_and_sizes(rungs: &[Rung]) -> Vec<(String, u32, u32)> {
        rungs
            .iter()
            .map(|r| (r.name.clone(), r.size.width, r.size.height))
            .collect()
    }

    #[test]
    fn standard_for_1080p_has_four_rungs_below_the_source() {
        let l = Ladders::default();
        let r = l.plan(STANDARD, Size::new(1920, 1080)).expect("plan");
        assert_eq!(
            names_and_sizes(&r),
            vec![
                ("720p".into(), 1280, 720),
                ("480p".into(), 854, 480),
                ("360p".into(), 640, 360),
                ("160p".into(), 284, 160),
            ]
        );
        assert_eq!(r[0].bitrate_bps, 3_000_000);
    }

    #[test]
    fn never_upscales_and_keeps_odd_aspect_ratios() {
        let l = Ladders::default();
        let r = l.plan(STANDARD, Size::new(1280, 720)).expect("plan");
        assert_eq!(
            names_and_sizes(&r),
            vec![
                ("480p".into(), 854, 480),
                ("360p".into(), 640, 360),
                ("160p".into(), 284, 160)
            ]
        );
        let r = l.plan(STANDARD, Size::new(1366, 768)).expect("plan");
        assert_eq!(
            names_and_sizes(&r),
            vec![
                ("720p".into(), 1280, 720),
                ("480p".into(), 854, 480),
                ("360p".into(), 640, 360),
                ("160p".into(), 284, 160)
            ]
        );
        // A portrait source keeps the rung height; the width shrinks.
        let r = l.plan(STANDARD, Size::new(1080, 1920)).expect("plan");
        assert_eq!(r[0].size, Size::new(406, 720));
        assert!(
            l.plan(PASSTHROUGH, Size::new(1920, 1080))
                .expect("plan")
                .is_empty()
        );
        assert!(
            l.plan(STANDARD, Size::new(256, 144))
                .expect("plan")
                .is_empty()
        );
    }

    #[test]
    fn custom_ladders_are_checked() {
        let mut custom = BTreeMap::new();
        custom.insert(
            "mobile".to_string(),
            vec![rung("540p", 540, 1500), rung("240p", 240, 400)],
        );
        let l = Ladders::with_custom(&custom).expect("valid");
        let r = l.plan("mobile", Size::new(1920, 1080)).expect("plan");
        assert_eq!(r[0].size, Size::new(960, 540));
        assert!(matches!(
            l.plan("nope", Size::new(1920, 1080)),
            Err(LadderError::Unknown(..))
        ));

        for bad in [
            vec![rung("source", 540, 1500)],
            vec![rung("a/b", 540, 1500)],
            vec![rung("x", 540, 1500), rung("x", 240, 400)],
            vec![rung("x", 8, 1500)],
        ] {
            let mut c = BTreeMap::new();
            c.insert("bad".to_string(), bad);
            assert!(Ladders::with_custom(&c).is_err());
        }
        let mut c = BTreeMap::new();
        c.insert(PASSTHROUGH.to_string(), vec![rung("x", 240, 400)]);
        assert!(Ladders::with_custom(&c).is_err());
    }
}
