#!/usr/bin/env python3
"""A WHIP publisher (RFC 9725) on aiortc: a second WebRTC stack, independent
of Chromium's and of the node's own, for the tests in tests/whip.rs.

It sends H.264 (aiortc's encoder: libx264 through PyAV, packetization-mode 1)
of an ffmpeg `testsrc2` pattern and Opus of a 440 Hz sine, both generated
live by lavfi, POSTs its offer to the WHIP endpoint with the stream key as a
bearer token, runs until it reads `stop` on stdin or `--seconds` pass, then
DELETEs the session (unless `--no-delete`).

Output, one JSON object a line on stdout:
  {"event": "published", "status": 201, "location": ..., "posted_ms": ...,
   "answered_ms": ..., "connected_ms": ..., "state": ...}
once the POST has been answered and ICE + DTLS connected (or failed), then
  {"ok": true|false, "error": ..., "delete_status": 200, "stats": {...}}
at the end. Times are Unix milliseconds, the clock the test reads too.

`--offer-only` prints the SDP offer (with the codecs asked for) and exits:
the tests POST such offers themselves to check what the node refuses.

aioice leaves 127.0.0.1 out of its host candidates; in the tests' network
namespace loopback is the only interface, so `--host-ip 127.0.0.1` (the
default) gathers on it instead. `--host-ip ''` keeps aioice's own choice.

Needs aiortc 1.16 in <repo>/.venv-whip (`make deps`).
"""

import argparse
import asyncio
import json
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


def parse_args():
    p = argparse.ArgumentParser(description="WHIP publisher on aiortc")
    p.add_argument("--url", help="WHIP endpoint, http://HOST:PORT/whip/CHANNEL")
    p.add_argument("--key", default="", help="stream key, sent as a bearer token")
    p.add_argument("--seconds", type=float, default=60.0, help="stop after this long at most")
    p.add_argument("--size", default="640x360", help="video WIDTHxHEIGHT")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--video-codec", default="H264", help="H264, VP8, VP9 or none")
    p.add_argument("--audio-codec", default="opus", help="opus, PCMU, PCMA or none")
    p.add_argument("--host-ip", default="127.0.0.1", help="gather ICE host candidates on this address only")
    p.add_argument("--offer-only", action="store_true", help="print the SDP offer and exit")
    p.add_argument("--no-delete", action="store_true", help="end without DELETE (as a crashed publisher)")
    a = p.parse_args()
    if not a.offer_only and not a.url:
        p.error("--url is required unless --offer-only")
    return a


def emit(obj):
    print(json.dumps(obj), flush=True)


def now_ms():
    return time.time() * 1000.0


def http(method, url, body=None, headers=None):
    """(status, headers, body text); HTTP errors are answers, not exceptions.
    The headers are an email.message.Message: `get` ignores case."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, r.headers, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode("utf-8", "replace")


def prefer_codec(transceiver, kind, name):
    from aiortc import RTCRtpSender

    caps = RTCRtpSender.getCapabilities(kind).codecs
    chosen = [c for c in caps if c.mimeType.lower() == f"{kind}/{name}".lower()]
    if not chosen:
        raise SystemExit(f"aiortc has no {kind} codec {name}: {[c.mimeType for c in caps]}")
    rtx = [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
    transceiver.setCodecPreferences(chosen + rtx)


async def make_offer(args, pc):
    from aiortc.contrib.media import MediaPlayer

    players = []
    if args.video_codec.lower() != "none":
        v = MediaPlayer(f"testsrc2=size={args.size}:rate={args.fps}", format="lavfi")
        players.append(v)
        t = pc.addTransceiver(v.video, direction="sendonly")
        prefer_codec(t, "video", args.video_codec)
    if args.audio_codec.lower() != "none":
        a = MediaPlayer("sine=frequency=440:sample_rate=48000", format="lavfi")
        players.append(a)
        t = pc.addTransceiver(a.audio, direction="sendonly")
        prefer_codec(t, "audio", args.audio_codec)
    # aiortc gathers every candidate before setLocalDescription returns.
    await pc.setLocalDescription(await pc.createOffer())
    return players


def stop_signal(loop):
    """An event set by a `stop` line on stdin (EOF is ignored)."""
    ev = asyncio.Event()

    def reader():
        for line in sys.stdin:
            if line.strip() == "stop":
                loop.call_soon_threadsafe(ev.set)
                return

    threading.Thread(target=reader, daemon=True).start()
    return ev


async def outbound_stats(pc):
    out = {}
    try:
        report = await pc.getStats()
    except Exception as e:  # stats are evidence, not a result
        return {"error": str(e)}
    for s in report.values():
        if s.type == "outbound-rtp":
            out[s.kind] = {"packets_sent": s.packetsSent, "bytes_sent": s.bytesSent}
    return out


async def run(args):
    if args.host_ip:
        import aioice.ice

        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [args.host_ip]
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    # No STUN server: host candidates only (the node is ICE-lite on loopback).
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    players = await make_offer(args, pc)
    offer = pc.localDescription.sdp
    if args.offer_only:
        sys.stdout.write(offer)
        await pc.close()
        return 0

    loop = asyncio.get_running_loop()
    stop = stop_signal(loop)
    result = {"ok": True}
    connected = asyncio.Event()
    times = {"connected_ms": None}

    @pc.on("connectionstatechange")
    def on_state():
        if pc.connectionState == "connected" and times["connected_ms"] is None:
            times["connected_ms"] = now_ms()
        if pc.connectionState in ("connected", "failed", "closed"):
            connected.set()

    posted = now_ms()
    status, headers, body = await asyncio.to_thread(
        http,
        "POST",
        args.url,
        offer.encode(),
        {"Content-Type": "application/sdp", "Authorization": f"Bearer {args.key}"},
    )
    answered = now_ms()
    loc = headers.get("Location")
    ev = {
        "event": "published",
        "status": status,
        "location": loc,
        "content_type": headers.get("Content-Type"),
        "posted_ms": posted,
        "answered_ms": answered,
    }
    if status != 201:
        ev["body"] = body
        emit(ev)
        await pc.close()
        emit({"ok": False, "error": f"POST answered {status}: {body}"})
        return 1
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    try:
        await asyncio.wait_for(connected.wait(), 15)
    except asyncio.TimeoutError:
        pass
    ev.update(connected_ms=times["connected_ms"], state=pc.connectionState, answer=body)
    emit(ev)
    if pc.connectionState != "connected":
        result.update(ok=False, error=f"connection state {pc.connectionState} 15 s after the answer")
    else:
        try:
            await asyncio.wait_for(stop.wait(), args.seconds)
        except asyncio.TimeoutError:
            pass
    result["stats"] = await outbound_stats(pc)
    result["state"] = pc.connectionState
    if loc and not args.no_delete:
        resource = urllib.parse.urljoin(args.url, loc)
        t = now_ms()
        st, _, b = await asyncio.to_thread(http, "DELETE", resource)
        result.update(delete_status=st, delete_body=b, delete_ms=t)
        if st != 200:
            result.update(ok=False, error=f"DELETE {resource} answered {st}: {b}")
    await pc.close()
    for p in players:
        for t in (p.audio, p.video):
            if t is not None:
                t.stop()
    emit(result)
    return 0 if result["ok"] else 1


def main():
    args = parse_args()
    try:
        import aiortc  # noqa: F401
    except ImportError as e:
        emit({"ok": False, "error": f"aiortc missing ({e}): run `make deps` (it makes .venv-whip)"})
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
