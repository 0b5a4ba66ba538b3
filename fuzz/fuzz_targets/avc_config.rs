//! Fuzzes `rungs::media::h264::parse_avc_config` (AVCDecoderConfigurationRecord from an FLV sequence header) and `parse_sps`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rungs::media::MediaError;
use rungs::media::h264::{parse_avc_config, parse_sps};

fuzz_target!(|data: &[u8]| {
    // Seeds are both whole records (first byte 1) and bare SPS NAL units (first byte 0x67):
    // every input goes to both parsers.
    let record = Bytes::copy_from_slice(data);
    match parse_avc_config(record.clone()) {
        Ok(p) => {
            assert_eq!(p.avcc, record, "avcC is carried verbatim");
            assert!(matches!(p.nal_length_size, 1 | 2 | 4), "{p:?}");
            assert!(p.width > 0 && p.height > 0, "{p:?}");
            assert_eq!(p.codec_string().len(), "avc1.PPCCLL".len());
        }
        Err(e) => check_error(&e),
    }
    match parse_sps(data) {
        Ok(d) => assert!(d.width > 0 && d.height > 0, "{d:?}"),
        Err(e) => check_error(&e),
    }
});

fn check_error(e: &MediaError) {
    if let MediaError::Truncated { need, have, .. } = e {
        assert!(need > have, "{e}");
    }
    let _ = e.to_string();
}
