#!/usr/bin/env python3
"""Prints the blocks of a memtrack record file (.mtr, versions 1 to 4), one
per line as 128 hex digits (the 64 bytes, event code at byte 58), the end
block left out: the reference decoder of docs/READER.md, "Record file".

    scripts/mtr-blocks.py FILE

Exit 1 with one line on stderr for a file it cannot read. Standard
library only; written from the documentation, and checked against the
Rust reader by cli's recording tests.
"""
import struct
import sys
import zlib

M = (1 << 64) - 1


def varint(b, i):
    v = shift = 0
    while True:
        if i >= len(b) or shift > 63:
            raise ValueError("bad varint")
        v |= (b[i] & 0x7F) << shift
        shift += 7
        i += 1
        if b[i - 1] < 0x80:
            return v, i


def unzig(v):
    return (v >> 1) ^ -(v & 1)


def blocks(data):
    magic, version, header_size, block_size = struct.unpack_from("<8sIII", data, 0)
    if magic != b"MTRECORD" or header_size != 256 or block_size != 64:
        raise ValueError("not a memtrack record file")
    body = data[256:]
    if version in (1, 2):
        for at in range(0, len(body) - len(body) % 64, 64):
            block = body[at:at + 64]
            if block[58] == 0x8F:
                return
            yield block
        raise ValueError("no end block")
    if version not in (3, 4):  # 4: version 3 with attach times in identity blocks
        raise ValueError(f"version {version}")
    ticket, time, slot, streams = M, 0, 0, {}
    at = 0
    while at < len(body):
        length, entries, payload_crc, header_crc = struct.unpack_from("<IIII", body, at)
        if zlib.crc32(body[at:at + 12]) != header_crc:
            raise ValueError(f"frame header checksum at byte {256 + at}")
        p = body[at + 16:at + 16 + length]
        if len(p) != length or zlib.crc32(p) != payload_crc:
            raise ValueError(f"frame at byte {256 + at} cut short or damaged")
        i = 0
        for _ in range(entries):
            tag = p[i]
            i += 1
            if tag == 0x8F:
                return
            if tag >= 0x80:
                yield p[i:i + 64]
                i += 64
                continue
            mask = p[i]
            i += 1
            event = tag & 0x0F
            if event == 0:
                event, i = p[i], i + 1
            d = 0
            if tag & 0x10:
                d, i = varint(p, i)
            ticket = (ticket + 1 + unzig(d)) & M
            if tag & 0x20:
                slot, i = varint(p, i)
            if tag & 0x40:
                d, i = varint(p, i)
                time = (time + unzig(d)) & M
            w = streams.setdefault(slot, [0] * 8)
            for k in range(6):
                if mask >> k & 1:
                    d, i = varint(p, i)
                    w[k + 2] = (w[k + 2] + unzig(d)) & M
            w7 = ((w[7] << 24) | (w[7] >> 40)) & M | event << 16
            yield struct.pack("<8Q", ticket, time, *w[2:7], w7)
        at += 16 + length
    raise ValueError("no end block")


def main():
    path = sys.argv[1]
    try:
        with open(path, "rb") as f:
            data = f.read()
        for block in blocks(data):
            print(block.hex())
    except (OSError, ValueError, struct.error, IndexError) as e:
        print(f"mtr-blocks: {path}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
