//! What `rungs channel` reads and prints: a channel's rules as flags, checked into a
//! stored policy, and channels with their rules as text or JSON.

use anyhow::Result;
use clap::Args;
use rungs::config::Config;
use rungs::registry::{Channel, Multitrack, Policy, Registry, TrackUse};
use rungs::serve::api::ChannelView;
use rungs::serve::rules::PolicyPatch;
use std::io::Write;

/// A channel's playback rules and hooks. Lists take the flag repeated or
/// comma-separated; on `update` a list given replaces that list, and an
/// empty value (`--allow-origin ''`) clears it, as `--play-hook ''` clears
/// the hook.
#[derive(Args)]
pub(crate) struct PolicyArgs {
    /// Only pages of this origin (scheme://host[:port]) may play the channel.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',')]
    allow_origin: Vec<String>,
    /// Only viewers in this country (ISO 3166-1 alpha-2) may watch; needs
    /// the node's access.geoip_database.
    #[arg(long, value_name = "CC", value_delimiter = ',')]
    allow_country: Vec<String>,
    /// Viewers in this country may not watch.
    #[arg(long, value_name = "CC", value_delimiter = ',')]
    deny_country: Vec<String>,
    /// Only viewers in this network (CIDR, or one address) may watch.
    #[arg(long, value_name = "NET", value_delimiter = ',')]
    allow_cidr: Vec<String>,
    /// Viewers in this network may not watch.
    #[arg(long, value_name = "NET", value_delimiter = ',')]
    deny_cidr: Vec<String>,
    /// This channel's publish hook, in place of the node's hooks.publish_url.
    #[arg(long, value_name = "URL")]
    publish_hook: Option<String>,
    /// This channel's play hook, in place of the node's hooks.play_url.
    #[arg(long, value_name = "URL")]
    play_hook: Option<String>,
    /// Whether publishers may send several video tracks (Enhanced RTMP
    /// multitrack): allow, deny or require.
    #[arg(long, value_name = "RULE", value_parser = kebab::<Multitrack>)]
    multitrack: Option<Multitrack>,
    /// What a multitrack publish's further tracks become: fill (rungs as
    /// sent, the rest of the ladder transcoded), passthrough-only, or
    /// transcode (tracks ignored).
    #[arg(long, value_name = "USE", value_parser = kebab::<TrackUse>)]
    tracks: Option<TrackUse>,
    /// The tallest video track accepted, in lines (1080 for 1080p); 0
    /// clears it.
    #[arg(long, value_name = "LINES")]
    max_height: Option<u32>,
    /// Record the channel's streams (to the node's recording store).
    #[arg(long, conflicts_with = "no_record")]
    record: bool,
    /// Do not record the channel's streams, whatever the node's default.
    #[arg(long)]
    no_record: bool,
}

/// A setting's value as the API spells it (`passthrough-only`).
fn kebab<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| e.to_string())
}

impl PolicyArgs {
    pub(crate) fn patch(self) -> PolicyPatch {
        let list = |v: Vec<String>| {
            (!v.is_empty()).then(|| v.into_iter().filter(|s| !s.trim().is_empty()).collect())
        };
        PolicyPatch {
            allowed_origins: list(self.allow_origin),
            allow_countries: list(self.allow_country),
            deny_countries: list(self.deny_country),
            allow_cidrs: list(self.allow_cidr),
            deny_cidrs: list(self.deny_cidr),
            publish_hook: self.publish_hook.map(Some),
            play_hook: self.play_hook.map(Some),
            multitrack: self.multitrack,
            tracks: self.tracks,
            max_height: self.max_height.map(|h| (h != 0).then_some(h)),
            record: match (self.record, self.no_record) {
                (true, _) => Some(Some(true)),
                (_, true) => Some(Some(false)),
                _ => None,
            },
        }
    }
}

/// `stored` with `patch` applied and checked, or an error naming the field.
pub(crate) fn patched(cfg: &Config, stored: Policy, patch: PolicyPatch) -> Result<Policy> {
    if patch.sets_countries() && cfg.access.geoip_database.as_os_str().is_empty() {
        eprintln!(
            "note: this config has no access.geoip_database; a node without one knows no \
             country (an allow list refuses every viewer, a deny list none)"
        );
    }
    rungs::serve::rules::normalize(patch.apply(stored)).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Each channel with its policy (the default for most).
pub(crate) fn with_policies(reg: &Registry, chs: Vec<Channel>) -> Result<Vec<(Channel, Policy)>> {
    let mut policies: std::collections::HashMap<String, Policy> =
        reg.policies()?.into_iter().collect();
    Ok(chs
        .into_iter()
        .map(|c| {
            let p = policies.remove(&c.id).unwrap_or_default();
            (c, p)
        })
        .collect())
}

/// `single` prints one JSON object rather than an array.
pub(crate) fn print_channels(
    out: &mut impl Write,
    cfg: &Config,
    chs: &[(Channel, Policy)],
    json: bool,
    single: bool,
) -> Result<()> {
    let views: Vec<ChannelView> = chs
        .iter()
        .map(|(c, p)| ChannelView::new(c, p, cfg))
        .collect();
    if json {
        match (single, views.as_slice()) {
            (true, [v]) => serde_json::to_writer(&mut *out, v)?,
            _ => serde_json::to_writer(&mut *out, &views)?,
        }
        writeln!(out)?;
        return Ok(());
    }
    for v in &views {
        let play = format!("{}/play/{}", cfg.http_base_url(), v.id);
        writeln!(
            out,
            "channel {name} (id {id}, ladder {ladder}{private})\n\
             \x20 RTMP server   {rtmp}\n\
             \x20 stream key    {key}\n\
             \x20 ffmpeg        ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
             -c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -b:a 128k -f flv {rtmp}/{key}\n\
             \x20 OBS           Settings > Stream: Service \"Custom...\", Server {rtmp}, Stream Key {key};\n\
             \x20               Settings > Output (Advanced): Keyframe Interval 2 s\n\
             \x20 WHIP          {whip} (OBS 30+: Service \"WHIP\", Bearer Token = stream key)\n\
             \x20 go live       {base}/publish/{id} (from a browser camera, over WHIP)\n\
             \x20 watch         {play}\n\
             \x20 HLS           {hls}\n{rules}",
            name = v.name,
            id = v.id,
            ladder = v.ladder,
            private = if v.private {
                ", private: playback token required"
            } else {
                ""
            },
            rtmp = v.ingest.rtmp,
            whip = v.ingest.whip,
            base = cfg.http_base_url(),
            key = v.stream_key,
            hls = v.playback_url,
            rules = rules_text(v),
        )?;
    }
    if views.is_empty() {
        writeln!(
            out,
            "no channels; create one with `rungs channel create --name NAME`"
        )?;
    }
    Ok(())
}

/// The lines of a channel's rules and hooks that are set, as `channel
/// show`/`list` print them.
fn rules_text(v: &ChannelView) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        if !value.is_empty() {
            out.push_str(&format!("  {label:<13} {value}\n"));
        }
    };
    let both = |allow: &[String], deny: &[String]| {
        let mut parts = Vec::new();
        if !allow.is_empty() {
            parts.push(format!("only {}", allow.join(", ")));
        }
        if !deny.is_empty() {
            parts.push(format!("not {}", deny.join(", ")));
        }
        parts.join("; ")
    };
    line("origins", v.allowed_origins.join(", "));
    line("countries", both(&v.allow_countries, &v.deny_countries));
    line("networks", both(&v.allow_cidrs, &v.deny_cidrs));
    line("publish hook", v.publish_hook.clone().unwrap_or_default());
    line("play hook", v.play_hook.clone().unwrap_or_default());
    if v.multitrack != Multitrack::default() || v.tracks != TrackUse::default() {
        line(
            "multitrack",
            format!("{}, tracks {}", v.multitrack.name(), v.tracks.name()),
        );
    }
    line(
        "max height",
        v.max_height
            .map(|h| format!("{h} lines"))
            .unwrap_or_default(),
    );
    line(
        "record",
        if v.record {
            "yes".into()
        } else {
            String::new()
        },
    );
    out
}
