//! Fuzzes `rungs::ingest::whip::AnnexBVideo`: the H.264 access units str0m depacketizes from a
//! WHIP publisher, turned into decoder configurations (parsing the SPS) and length-prefixed
//! samples.
//!
//! Input: access units one after another, each prefixed by its length as a big-endian u16
//! (the last one takes what is left).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rungs::ingest::whip::{AnnexBVideo, VideoAu, VideoSample};
use rungs::media::h264::count_length_prefixed_nals;

/// NAL unit types a sample never carries (they go in the avcC or mean nothing there).
const SPS: u8 = 7;
const PPS: u8 = 8;
const AUD: u8 = 9;

fuzz_target!(|input: &[u8]| {
    let mut video = AnnexBVideo::new("fuzz".into());
    let mut configured = false;
    let mut rest = input;
    while !rest.is_empty() {
        let (au, tail) = match rest {
            [a, b, tail @ ..] => {
                let n = usize::from(u16::from_be_bytes([*a, *b])).min(tail.len());
                tail.split_at(n)
            }
            _ => (rest, &[][..]),
        };
        rest = tail;
        let VideoAu { config, sample } = video.push(au);
        if let Some(params) = config {
            assert_eq!(params.nal_length_size, 4, "samples use 4-byte lengths");
            assert!(params.width > 0 && params.height > 0, "{params:?}");
            configured = true;
        }
        if let Some(VideoSample { data, .. }) = sample {
            assert!(configured, "a sample before any configuration");
            let n = count_length_prefixed_nals(&data, 4).expect("lengths tile the sample");
            assert!(n > 0);
            let mut at = 0;
            while at < data.len() {
                let len = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
                let nal = &data[at + 4..at + 4 + len as usize];
                assert!(
                    !matches!(nal[0] & 0x1f, SPS | PPS | AUD),
                    "{:#x} in a sample",
                    nal[0]
                );
                at += 4 + len as usize;
            }
        }
    }
});
