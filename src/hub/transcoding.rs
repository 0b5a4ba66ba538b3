//! A channel's transcoding pipeline as its driver holds it: started, fed
//! and flushed when the [`ChannelCore`] says so. The live channel thread
//! and `rungs transcode` both carry out the core's pipeline outputs here.

use super::core::{ChannelCore, Input, Output};
use crate::media::{Arrival, IngestEvent};
use crate::transcode::pipeline::{Output as RungOutput, Pipeline, PipelineConfig};
use crossbeam_channel::Receiver;
use std::time::Instant;

pub(super) struct Transcoding {
    channel: String,
    /// `None` for a passthrough channel.
    template: Option<PipelineConfig>,
    pipeline: Option<Pipeline>,
}

impl Transcoding {
    pub fn new(channel: &str, template: Option<PipelineConfig>) -> Self {
        Transcoding {
            channel: channel.to_owned(),
            template,
            pipeline: None,
        }
    }

    /// Whether the channel has a ladder to make.
    pub fn enabled(&self) -> bool {
        self.template.is_some()
    }

    /// What the running pipeline makes; never ready without one.
    pub fn outputs(&self) -> Receiver<RungOutput> {
        self.pipeline
            .as_ref()
            .map_or_else(crossbeam_channel::never, |p| p.outputs().clone())
    }

    /// Carries out `out` if it is about the pipeline, handing a flush's
    /// outputs to the core (through `keep`, which may take some for
    /// itself) before anything else. Any other output comes back.
    pub fn carry(
        &mut self,
        core: &mut ChannelCore,
        now: Instant,
        out: Output,
        keep: &mut dyn FnMut(RungOutput) -> Option<RungOutput>,
    ) -> std::io::Result<Option<Output>> {
        match out {
            Output::StartPipeline { covered } => {
                if let Some(cfg) = &self.template {
                    let cfg = PipelineConfig {
                        covered,
                        ..cfg.clone()
                    };
                    self.pipeline = Some(Pipeline::start(&self.channel, cfg)?);
                }
            }
            Output::Transcode(event, arrival) => self.feed(event, arrival),
            Output::FlushPipeline => {
                let rest = match self.pipeline.take() {
                    Some(mut p) => p.finish().into_iter().filter_map(&mut *keep).collect(),
                    None => Vec::new(),
                };
                core.handle(now, Input::Flushed(rest));
            }
            other => return Ok(Some(other)),
        }
        Ok(None)
    }

    fn feed(&mut self, event: IngestEvent, arrival: Arrival) {
        let Some(p) = &mut self.pipeline else { return };
        match event {
            IngestEvent::VideoConfig(params) => p.push_config(params),
            IngestEvent::Packet(pkt) => p.push_packet(pkt, arrival),
            IngestEvent::AudioConfig(_) | IngestEvent::Track { .. } => {}
        }
    }
}
