"""Deterministic data for the volume demo, and an independent check of a volume's content.

  fill PATH --offset-mb N --size-mb M --seed S   write M MiB of seeded bytes at N MiB (fsync); prints JSON
                                                  with the seconds and the worst latency of a 1 MiB write
  expect --size-gb G --region N:M:S ...           sha256 of the content a volume of G GiB must have: zeros,
                                                  with each region (offset MiB, size MiB, seed) written in order
  digest IMAGE --format F                         sha256 of the volume's content, read back with qemu-img

Independent of the collection: it neither imports it nor reads its records.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024


def chunk(seed, index):
    return random.Random('%s-%d' % (seed, index)).randbytes(MIB)


def fill(args):
    worst = 0.0
    started = time.monotonic()
    fd = os.open(args.path, os.O_WRONLY)
    try:
        for i in range(args.size_mb):
            t0 = time.monotonic()
            os.pwrite(fd, chunk(args.seed, i), (args.offset_mb + i) * MIB)
            worst = max(worst, time.monotonic() - t0)
        os.fsync(fd)
    finally:
        os.close(fd)
    print(json.dumps({'offset_mb': args.offset_mb, 'size_mb': args.size_mb, 'seed': args.seed,
                      'seconds': round(time.monotonic() - started, 2), 'worst_write_ms': round(worst * 1000, 1)}))


def expect(args):
    regions = []
    for text in args.region:
        offset, size, seed = text.split(':')
        regions.append((int(offset), int(size), seed))
    digest = hashlib.sha256()
    zero = bytes(MIB)
    for mib in range(args.size_gb * 1024):
        data = zero
        for offset, size, seed in regions:  # the last region written over a MiB wins
            if offset <= mib < offset + size:
                data = chunk(seed, mib - offset)
        digest.update(data)
    print(digest.hexdigest())


def digest(args):
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, 'content.raw')
        subprocess.run(['qemu-img', 'convert', '-U', '-f', args.format, '-O', 'raw', args.image, raw], check=True)
        result = hashlib.sha256()
        with open(raw, 'rb') as handle:
            for block in iter(lambda: handle.read(16 * MIB), b''):
                result.update(block)
    print(result.hexdigest())


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest='command', required=True)
    p = sub.add_parser('fill')
    p.add_argument('path')
    p.add_argument('--offset-mb', type=int, required=True)
    p.add_argument('--size-mb', type=int, required=True)
    p.add_argument('--seed', required=True)
    p.set_defaults(run=fill)
    p = sub.add_parser('expect')
    p.add_argument('--size-gb', type=int, required=True)
    p.add_argument('--region', action='append', default=[])
    p.set_defaults(run=expect)
    p = sub.add_parser('digest')
    p.add_argument('image')
    p.add_argument('--format', required=True)
    p.set_defaults(run=digest)
    args = parser.parse_args()
    args.run(args)


if __name__ == '__main__':
    sys.exit(main())
