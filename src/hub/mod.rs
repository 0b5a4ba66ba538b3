//! Per-channel owners: who publishes to which channel, and the fan-out to packaging.

use crate::media::IngestEvent;

/// Why a publish attempt was refused. The message never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("unknown stream key")]
    UnknownKey,
    #[error("channel {0} already has a publisher")]
    AlreadyLive(String),
    #[error("channel registry: {0}")]
    Registry(String),
}

impl PublishError {
    /// Short label for the `reason` metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::UnknownKey => "unknown_key",
            PublishError::AlreadyLive(_) => "already_live",
            PublishError::Registry(_) => "internal",
        }
    }
}

/// The node-wide table of channels and their owners.
pub struct Hub {}

impl Hub {
    /// Claims the channel whose stream key is `stream_key` for a new publisher.
    pub fn start_publish(
        &self,
        _stream_key: &str,
        _ingest: &'static str,
    ) -> Result<Publisher, PublishError> {
        todo!()
    }
}

/// A publisher's handle on its channel. Dropping it ends the publish session;
/// the channel then waits its grace period for the publisher to come back.
pub struct Publisher {}

impl Publisher {
    pub fn channel_id(&self) -> &str {
        todo!()
    }

    /// Hands one event to the channel. Never blocks: when the channel is
    /// behind, packets are dropped (whole GOPs) and counted.
    pub fn send(&self, _event: IngestEvent) {
        todo!()
    }
}
