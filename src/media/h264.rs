//! H.264 helpers: AVCDecoderConfigurationRecord and SPS parsing.
