#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/ from ffmpeg output (see README.md, "Seeds").

usage: make_seeds.py FLV_DIR RTMP_CAPTURE

FLV_DIR holds the .flv files made by the ffmpeg commands in README.md; RTMP_CAPTURE is the
client-to-server bytes of one ffmpeg RTMP publish, and RTMP_CAPTURE.reads the size of each
read the proxy made, one a line. Every seed is kept under 4 KB.
"""
import hashlib
import hmac
import os
import struct
import sys
import zlib

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


def annexb_seeds(flv_dir):
    """whip_annexb: each file's first access units as str0m hands them over (Annex B, 4-byte
    start codes, a keyframe with its SPS and PPS in front), each prefixed by a u16 length."""
    start = b"\x00\x00\x00\x01"
    for file in sorted(os.listdir(flv_dir)):
        if not file.endswith(".flv"):
            continue
        stem, sets, aus = file[:-4], b"", []
        for kind, body in tags(os.path.join(flv_dir, file)):
            if kind != 9 or len(body) < 5:
                continue
            if body[1] == 0:
                record = body[5:]
                sps_len = int.from_bytes(record[6:8], "big")
                sps = record[8 : 8 + sps_len]
                pps_at = 8 + sps_len + 1
                pps = record[pps_at + 2 : pps_at + 2 + int.from_bytes(record[pps_at : pps_at + 2], "big")]
                sets = start + sps + start + pps
            elif body[1] == 1 and len(aus) < 3:
                au, payload = b"", body[5:]
                while len(payload) >= 4:
                    n = int.from_bytes(payload[:4], "big")
                    au += start + payload[4 : 4 + n]
                    payload = payload[4 + n :]
                aus.append((sets if body[0] >> 4 == 1 else b"") + au)
        seed = b"".join(struct.pack(">H", len(au)) + au for au in aus)
        if aus and len(seed) < LIMIT:
            put("whip_annexb", stem, seed)


def stun_binding_request(local_ufrag, remote_ufrag, password):
    """An ICE connectivity check (RFC 8445 7.1.2) as a WHIP publisher sends it: USERNAME,
    PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY and FINGERPRINT (RFC 5389)."""
    def attr(kind, value):
        return struct.pack(">HH", kind, len(value)) + value + b"\x00" * (-len(value) % 4)

    body = attr(0x0006, f"{local_ufrag}:{remote_ufrag}".encode())
    body += attr(0x0024, struct.pack(">I", 1853817087))
    body += attr(0x802A, bytes(range(8)))
    body += attr(0x0025, b"")
    txid = bytes(range(0x30, 0x3C))

    def header(length):
        return struct.pack(">HHI", 0x0001, length, 0x2112A442) + txid

    mac = hmac.new(password.encode(), header(len(body) + 24) + body, hashlib.sha1).digest()
    body += attr(0x0008, mac)
    crc = zlib.crc32(header(len(body) + 8) + body) ^ 0x5354554E
    body += attr(0x8028, struct.pack(">I", crc))
    return header(len(body)) + body


def whip_udp_seeds():
    """whip_udp: the binding request that opens the first session's address (its fixed
    credentials, the fixture offer's ufrag), then what follows on an opened address."""
    def datagram(flags, data):
        return bytes([flags]) + struct.pack(">H", len(data)) + data

    check = stun_binding_request("fuzzufrag", "WFlf", "fuzzpassword0123456789abcd")
    rtp = bytes([0x80, 0x60, 0, 1, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]) + bytes(20)
    rtcp = bytes([0x81, 0xC9, 0, 7]) + bytes(28)
    dtls = bytes([22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    put("whip_udp", "binding-request", datagram(0, check))
    put("whip_udp", "opened-then-media", datagram(0, check) + datagram(4, dtls) + datagram(8, rtp) + datagram(28, rtcp))
    put("whip_udp", "unknown-sources", datagram(1, rtp) + datagram(2, check) + datagram(3, dtls))


def packager_seeds():
    """packager_events: 5-byte events (see the target's top comment)."""
    def ev(op, a=0, b=0, c=0, d=0):
        return bytes([op, a, b, c, d])

    def frames(n, step=3, key_every=10, audio=True):
        out = b""
        for i in range(n):
            out += ev(2, 0, step, 0, (1 if i % key_every == 0 else 0) | 8)
            if audio:
                out += ev(3, 0, 23) + ev(3, 0, 10)
            out += ev(7, 0, 33)
        return out

    start = ev(0, 0) + ev(1, 0)
    put("packager_events", "steady", start + frames(120))
    # A new resolution in the middle of a GOP, then the keyframe after it.
    put("packager_events", "config-mid-gop", start + frames(25) + ev(0, 1) + frames(40))
    # Video steps back 2 s, then jumps an hour ahead.
    back = ev(2, 0xFF, 0x38, 0, 1)
    put("packager_events", "backwards-and-jump", start + frames(30) + back + frames(20) + ev(4, 0, 0x13, 0xC6, 0x80) + frames(30))
    # The publisher goes away and comes back with other audio; then the stream ends.
    put("packager_events", "gap-and-end", start + frames(30) + ev(5) + ev(1, 1) + frames(30) + ev(6) + frames(12))
    # B-frames: composition offsets ahead of decode time.
    b = b"".join(ev(2, 0, 4, 8 if i % 3 else 0, (1 if i % 12 == 0 else 0) | 4) for i in range(60))
    put("packager_events", "bframes-no-audio", ev(0, 2) + b)


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
    annexb_seeds(sys.argv[1])
    rtmp_seeds(sys.argv[2])
    hls_seeds()
    whip_udp_seeds()
    packager_seeds()
