//! Per-channel rules beyond the private flag: which sites may embed the
//! player, which countries and networks may watch, which backend decides
//! publish and play for this channel instead of the node's hooks, and what
//! a publisher may send (multitrack, the tallest picture).
//!
//! Stored as one JSON column so a rule added later needs no migration; the
//! registry checks only that it parses, `serve` validates what it means.

use super::db::{Mode, args};
use super::{Registry, RegistryError, Result};
use serde::{Deserialize, Serialize};

/// A channel's playback and publish rules. Every list empty (the default)
/// means no restriction of that kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Origins (`https://example.com`) whose pages may play the channel,
    /// checked on `Origin` (else `Referer`); CORS echoes only these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// ISO 3166-1 alpha-2 codes; when not empty, only these may watch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_countries: Vec<String>,
    /// ISO 3166-1 alpha-2 codes that may not watch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_countries: Vec<String>,
    /// Networks (`10.0.0.0/8`, `2001:db8::/32`); when not empty, only these may watch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_cidrs: Vec<String>,
    /// Networks that may not watch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_cidrs: Vec<String>,
    /// Publish hook URL for this channel, replacing the node's `hooks.publish_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_hook: Option<String>,
    /// Play hook URL for this channel, replacing the node's `hooks.play_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_hook: Option<String>,
    /// Whether a publisher may (or must) send several video tracks.
    #[serde(default, skip_serializing_if = "is_default")]
    pub multitrack: Multitrack,
    /// What the further tracks of a multitrack publish become.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tracks: TrackUse,
    /// The tallest video track accepted, in lines (1080 for 1080p); taller is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    /// Whether the channel's streams are recorded; unset: the node's
    /// `recording.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Whether a channel takes multitrack publishes (Enhanced RTMP v2: several video tracks
/// on one connection, the broadcaster's own ladder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Multitrack {
    #[default]
    Allow,
    /// A publish with a second video track is cut.
    Deny,
    /// A publish with one video track is cut.
    Require,
}

/// What a multitrack publish's further video tracks become.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrackUse {
    /// Each track is a rung passed through as sent; the ladder's rungs no track covers are
    /// transcoded from the source (track 0).
    #[default]
    Fill,
    /// Only the tracks are rungs; nothing is transcoded.
    PassthroughOnly,
    /// The tracks are ignored; the ladder is transcoded from the source as for one track.
    Transcode,
}

impl Multitrack {
    pub fn name(self) -> &'static str {
        match self {
            Multitrack::Allow => "allow",
            Multitrack::Deny => "deny",
            Multitrack::Require => "require",
        }
    }
}

impl TrackUse {
    pub fn name(self) -> &'static str {
        match self {
            TrackUse::Fill => "fill",
            TrackUse::PassthroughOnly => "passthrough-only",
            TrackUse::Transcode => "transcode",
        }
    }
}

impl Policy {
    /// Whether any playback restriction beyond the private flag applies.
    pub fn restricts_playback(&self) -> bool {
        !(self.allowed_origins.is_empty()
            && self.allow_countries.is_empty()
            && self.deny_countries.is_empty()
            && self.allow_cidrs.is_empty()
            && self.deny_cidrs.is_empty())
    }
}

fn parse(id: &str, json: &str) -> Result<Policy> {
    serde_json::from_str(json)
        .map_err(|e| RegistryError::InvalidPolicy(format!("stored policy of channel {id}: {e}")))
}

impl Registry {
    pub fn policy(&self, id: &str) -> Result<Policy> {
        let json = self.call("policy", Mode::Read, |db| {
            db.query_opt("SELECT policy FROM channels WHERE id = $1", args![id])?
                .map(|r| r.text(0))
                .transpose()
        })?;
        let json = json.ok_or_else(|| RegistryError::NotFound(id.to_string()))?;
        parse(id, &json)
    }

    /// Replaces the channel's policy whole.
    pub fn set_policy(&self, id: &str, policy: &Policy) -> Result<()> {
        let json = serde_json::to_string(policy)
            .map_err(|e| RegistryError::InvalidPolicy(e.to_string()))?;
        match self.call("set_policy", Mode::Write, |db| {
            db.exec(
                "UPDATE channels SET policy = $1 WHERE id = $2",
                args![&json, id],
            )
        })? {
            0 => Err(RegistryError::NotFound(id.to_string())),
            _ => Ok(()),
        }
    }

    /// Every channel whose policy is not the default, by id. A policy that
    /// no longer parses is skipped with a warning rather than hiding the rest.
    pub fn policies(&self) -> Result<Vec<(String, Policy)>> {
        let rows = self.call("policies", Mode::Read, |db| {
            db.query("SELECT id, policy FROM channels WHERE policy != '{}'", &[])?
                .iter()
                .map(|r| Ok((r.text(0)?, r.text(1)?)))
                .collect::<std::result::Result<Vec<_>, _>>()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, json)| match parse(&id, &json) {
                Ok(p) => Some((id, p)),
                Err(e) => {
                    tracing::warn!(error = %e, "channel policy ignored");
                    None
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(dir.path()).expect("open");
        let a = reg.create("a", "standard").expect("create");
        let b = reg.create("b", "standard").expect("create");
        assert_eq!(reg.policy(&a.id).expect("policy"), Policy::default());
        assert!(reg.policies().expect("policies").is_empty());
        let p = Policy {
            allowed_origins: vec!["https://example.com".into()],
            deny_countries: vec!["FR".into()],
            play_hook: Some("http://127.0.0.1:9/play".into()),
            multitrack: Multitrack::Require,
            tracks: TrackUse::PassthroughOnly,
            max_height: Some(1080),
            ..Policy::default()
        };
        reg.set_policy(&a.id, &p).expect("set");
        drop(reg);
        let reg = Registry::open(dir.path()).expect("reopen");
        assert_eq!(reg.policy(&a.id).expect("policy"), p);
        assert_eq!(reg.policies().expect("policies"), vec![(a.id.clone(), p)]);
        assert_eq!(reg.policy(&b.id).expect("policy"), Policy::default());
        assert!(matches!(
            reg.set_policy("nope", &Policy::default()),
            Err(RegistryError::NotFound(_))
        ));
    }
}
