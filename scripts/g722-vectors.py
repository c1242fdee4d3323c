#!/usr/bin/env python3
"""Writes the G.722 reference vectors that media-node/tests/codec_g722.rs checks our codec
against, using the PyPI `g722` package (a wrapper of the public-domain libg722, the spandsp
code Asterisk, FreeSWITCH and baresip use) as the reference.

    python3 -m venv /tmp/g722 && /tmp/g722/bin/pip install g722==1.2.8
    /tmp/g722/bin/python scripts/g722-vectors.py media-node/tests/data/g722

Files (all little-endian 16-bit PCM at 16 kHz, or G.722 bytes at 64 kbit/s):
  input.s16     1 s of test signal: a 50 Hz-7.9 kHz sweep at rising level, noise bursts,
                full-scale square waves, silence (deterministic: no random module)
  encoded.g722  the reference encoder's output for input.s16 (one encoder, reset state)
  decoded.s16   the reference decoder's output for encoded.g722
  codes.g722    2,000 arbitrary bytes (every code, including 0-3, which encoders never make)
  codes.s16     the reference decoder's output for codes.g722
"""
import array
import math
import os
import sys

import G722

RATE = 16000


def lcg(seed):
    while True:
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        yield seed


def test_signal():
    out = []
    rnd = lcg(7)
    # 0.5 s: exponential sweep 50 Hz -> 7.9 kHz, level rising from -40 dBFS to -3 dBFS.
    n = RATE // 2
    phase = 0.0
    for i in range(n):
        f = 50.0 * (7900.0 / 50.0) ** (i / n)
        phase += 2 * math.pi * f / RATE
        level = 10 ** ((-40 + 37 * i / n) / 20) * 32767
        out.append(int(level * math.sin(phase)))
    # 0.2 s: noise bursts of 20 ms at alternating levels.
    for burst in range(10):
        scale = 30000 if burst % 2 else 300
        for _ in range(RATE // 50):
            out.append((next(rnd) % (2 * scale + 1)) - scale)
    # 0.1 s: full-scale square waves at 1 kHz and 5.3 kHz.
    for i in range(RATE // 20):
        out.append(32767 if (i // 8) % 2 == 0 else -32768)
    for i in range(RATE // 20):
        out.append(32767 if math.sin(2 * math.pi * 5300 * i / RATE) >= 0 else -32768)
    # 0.2 s: silence.
    out.extend([0] * (RATE // 5))
    assert len(out) == RATE, len(out)
    return array.array("h", out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    os.makedirs(directory, exist_ok=True)

    def write(name, data):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(bytes(data))
        print(f"{name}: {len(data)} bytes")

    pcm = test_signal()
    encoded = G722.G722(RATE, 64000).encode(pcm)
    decoded = G722.G722(RATE, 64000).decode(encoded)
    rnd = lcg(11)
    codes = bytes(next(rnd) >> 7 & 0xFF for _ in range(2000))
    codes_pcm = G722.G722(RATE, 64000).decode(codes)
    for a in (pcm, decoded, codes_pcm):
        if sys.byteorder != "little":
            a.byteswap()
    write("input.s16", pcm.tobytes())
    write("encoded.g722", encoded)
    write("decoded.s16", decoded.tobytes())
    write("codes.g722", codes)
    write("codes.s16", codes_pcm.tobytes())


if __name__ == "__main__":
    main()
