#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ from ffmpeg output (see README.md, "Seeds").

usage: make_seeds.py FLV_DIR RTMP_CAPTURE

FLV_DIR holds the .flv files made by the ffmpeg commands in README.md; RTMP_CAPTURE is the
client-to-server bytes of one ffmpeg RTMP publish, and RTMP_CAPTURE.reads the size of each
read the proxy made, one a line. Every seed is kept under 4 KB.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIMIT = 4096


def tags(path):
    d = open(path, "rb").read()
    assert d[:3] == b"FLV", path
    off = struct.unpack(">I", d[5:9])[0] + 4
    while off + 11 <= len(d):
        kind = d[off] & 0x1F
        size = int.from_bytes(d[off + 1 : off + 4], "big")
        yield kind, d[off + 11 : off + 11 + size]
        off += 11 + size + 4


def put(target, name, data):
    assert len(data) < LIMIT, (target, name, len(data))
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed-" + name), "wb") as f:
        f.write(data)


def flv_seeds(flv_dir):
    for file in sorted(os.listdir(flv_dir)):
        if not file.endswith(".flv"):
            continue
        stem = file[:-4]
        frames = audio_frames = 0
        for kind, body in tags(os.path.join(flv_dir, file)):
            if kind == 9 and len(body) >= 5:
                packet_type = body[1]
                if packet_type == 0:
                    put("flv_video", f"{stem}-seqhdr", body)
                    record = body[5:]
                    put("avc_config", f"{stem}-avcc", record)
                    sps_len = int.from_bytes(record[6:8], "big")
                    put("avc_config", f"{stem}-sps", record[8 : 8 + sps_len])
                elif packet_type == 1 and frames < 2 and len(body) < LIMIT - 1:
                    frames += 1
                    key = "key" if body[0] >> 4 == 1 else "inter"
                    put("flv_video", f"{stem}-{key}{frames}", body)
                    # nal_length_size 4, as every ffmpeg record here says, then the payload.
                    put("avc_sample", f"{stem}-{key}{frames}", b"\x04" + body[5:])
                elif packet_type == 2:
                    put("flv_video", f"{stem}-eos", body)
            elif kind == 8 and len(body) >= 2:
                if body[1] == 0:
                    put("flv_audio", f"{stem}-seqhdr", body)
                    put("aac_config", f"{stem}-asc", body[2:])
                elif audio_frames < 1:
                    audio_frames += 1
                    put("flv_audio", f"{stem}-frame", body)


def rtmp_seeds(capture):
    data = open(capture, "rb").read()
    reads = [int(line) for line in open(capture + ".reads")]
    assert sum(reads) == len(data) and reads[:2] == [1537, 1536], reads
    # The stream key is a secret even for a throwaway channel: same length, so every AMF
    # string length stays right.
    i = data.find(b"sk_")
    while i >= 0:
        data = data[:i] + b"sk_" + b"0" * 40 + data[i + 43 :]
        i = data.find(b"sk_", i + 1)
    handshake, stream = data[:3073], data[3073:]

    def lengths(ls):
        assert len(ls) <= 15
        return bytes([len(ls)]) + b"".join(struct.pack(">H", n) for n in ls)

    # Flags 0x10: the harness does the handshake; the rest is the chunk stream, cut where
    # ffmpeg's writes were (it waits for each answer, so connect and publish come apart).
    real = lengths(reads[2:][:15])
    put("rtmp_session", "ffmpeg-publish", bytes([0x10 | real[0]]) + real[1:] + stream)
    # 0x20: the same, and the publish is refused.
    put("rtmp_session", "ffmpeg-publish-refused", bytes([0x30 | real[0]]) + real[1:] + stream)
    # The whole chunk stream in one read: a pipelined client.
    put("rtmp_session", "ffmpeg-publish-one-read", b"\x10" + stream)
    # Three read lengths (1, 100, 7) cycled: cuts inside chunk headers and messages.
    split = lengths([1, 100, 7])
    put("rtmp_session", "ffmpeg-publish-split", bytes([0x10 | split[0]]) + split[1:] + stream)
    # No flags: the real handshake as ffmpeg sent it, then its first writes.
    real = lengths(reads[:15])
    put("rtmp_session", "ffmpeg-handshake", real + (handshake + stream)[: LIMIT - 1 - len(real)])


def hls_seeds():
    sid = "loyw3v5n"
    for i, path in enumerate([
        "live/master.m3u8",
        "live/source/index.m3u8",
        "live/audio/index.m3u8?_HLS_msn=3&_HLS_part=1",
        "live/source/index.m3u8?_HLS_msn=2&_HLS_skip=YES&token=abc",
        "live/source/index.m3u8?_HLS_part=1",
        "live/source/index.m3u8?_HLS_msn=99",
        f"live/source/init-{sid}-1.mp4",
        f"live/audio/{sid}-1.m4s",
        f"live/source/{sid}-3.2.m4s",
        f"live/source/{sid}-4.9.m4s",
        "live/source/%2e%2e%2fx-1.m4s",
        "nope/source/index.m3u8",
    ]):
        put("hls_request", f"{i:02}", path.encode())


if __name__ == "__main__":
    flv_seeds(sys.argv[1])
    rtmp_seeds(sys.argv[2])
    hls_seeds()
