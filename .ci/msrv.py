#!/usr/bin/env python3
"""The minimum Rust version is true: no locked dependency needs a newer one
than Cargo.toml's rust-version says. (Our own code is held to it by clippy's
incompatible_msrv lint, which .ci/run runs with warnings denied; the machine
cannot install an older toolchain to build with.)

Usage: cargo metadata --format-version 1 --locked | msrv.py
"""
import json
import sys


def version(text):
    parts = [int(x) for x in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    meta = json.load(sys.stdin)
    ours = next(p for p in meta["packages"] if p["name"] == "kvstore")
    msrv = version(ours["rust_version"])
    too_new = [
        f"{p['name']} {p['version']} needs Rust {p['rust_version']}"
        for p in meta["packages"]
        if p.get("rust_version") and version(p["rust_version"]) > msrv
    ]
    for line in too_new:
        print(f"MSRV: {line}, over rust-version {ours['rust_version']}")
    if not too_new:
        print(f"MSRV {ours['rust_version']}: every locked dependency builds with it")
    return 1 if too_new else 0


if __name__ == "__main__":
    sys.exit(main())
