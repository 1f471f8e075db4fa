#!/usr/bin/env python3
"""The documentation's commands, run: every ```sh block of README.md and
docs/eks.md carries a directive comment just before it, and this script
holds the docs to it.

  <!-- doc-test: run; expect "TEXT"; ... -->   run the block against a cluster
                                               in a box; exit 0, and each TEXT
                                               in its output
  <!-- doc-test: skip: WHY -->                  not runnable here (needs AWS, ...)
  <!-- doc-test: covered: WHERE -->             run elsewhere in CI

A block without a directive fails the run, so a new command must be placed.
It also checks that every #anchor link between and within the two documents
names a heading that exists.

The box is started here from the debug build, as `kvstore local` in a temp
directory (the README's commands use `.kvstore/local` and 127.0.0.10..12).
The blocks run in that directory with `target/debug` first on PATH; the
README's `cargo build --release` is skipped and `target/release/` means
`target/debug/` (CI has the debug build; a release build would take
minutes).

Usage: doc_commands.py REPO_ROOT
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

DOCS = ["README.md", "docs/eks.md"]
BLOCK = re.compile(r"(?m)^(?P<indent> *)```sh\n(?P<body>.*?)^(?P=indent)```", re.S)
DIRECTIVE = re.compile(r"<!-- doc-test: (?P<what>.*?) -->\s*$")


def blocks(root):
    for doc in DOCS:
        text = open(os.path.join(root, doc), encoding="utf-8").read()
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            before = text[: m.start()].rstrip("\n").splitlines()
            directive = DIRECTIVE.search(before[-1]) if before else None
            yield doc, line, m.group("body"), directive.group("what") if directive else None


def slug(heading):
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def check_links(root):
    problems = []
    anchors = {}
    texts = {}
    for doc in DOCS:
        text = open(os.path.join(root, doc), encoding="utf-8").read()
        texts[doc] = text
        anchors[doc] = {slug(h) for h in re.findall(r"(?m)^#+ (.*)$", text)}
    for doc, text in texts.items():
        for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", text):
            where = doc if not target else os.path.normpath(os.path.join(os.path.dirname(doc), target))
            if where in anchors and anchor not in anchors[where]:
                problems.append(f"{doc}: the link to {target}#{anchor} names no heading")
    return problems


def start_box(root, work):
    kvstore = os.path.join(root, "target", "debug", "kvstore")
    log = open(os.path.join(work, "box.log"), "w")
    box = subprocess.Popen([kvstore, "local"], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    if not box_ready(root, work):
        stop_box(box)
        sys.exit(f"the cluster in a box did not come up; its log:\n{open(os.path.join(work, 'box.log')).read()}")
    return box


def box_ready(root, work, within=60):
    """Waits until kvstore-0 leads and every pod is ready: each block starts
    from the steady state the README describes."""
    kvctl = os.path.join(root, "target", "debug", "kvctl")
    deadline = time.time() + within
    while time.time() < deadline:
        r = subprocess.run([kvctl, "--timeout", "2", "status"], cwd=work, capture_output=True, text=True)
        # One row per pod (it starts with the ordinal); the lines after the
        # table (the membership) are not pods.
        rows = [l.split() for l in r.stdout.splitlines()[1:] if l.split()[:1] and l.split()[0].isdigit()]
        if r.returncode == 0 and len(rows) == 3 and all(row[-1] == "yes" for row in rows) and rows[0][3] == "leader":
            return True
        time.sleep(0.5)
    return False


def stop_box(box):
    box.send_signal(signal.SIGINT)
    try:
        box.wait(timeout=30)
    except subprocess.TimeoutExpired:
        box.kill()
        box.wait()


def runnable(body, root):
    lines = []
    for line in body.splitlines():
        if line.strip().startswith("cargo build --release"):
            continue
        lines.append(line.replace("target/release/", os.path.join(root, "target", "debug") + "/"))
    return "set -euo pipefail\nshopt -s expand_aliases\n" + "\n".join(lines) + "\n"


def main():
    root = os.path.abspath(sys.argv[1])
    failures = check_links(root)
    counts = {"run": 0, "skip": 0, "covered": 0}
    to_run = []
    for doc, line, body, what in blocks(root):
        where = f"{doc}:{line}"
        if what is None:
            failures.append(f"{where}: a sh block with no doc-test directive")
        elif what.startswith("skip:") or what.startswith("covered:"):
            counts[what.split(":")[0]] += 1
        elif what.startswith("run"):
            expects = re.findall(r'expect "([^"]*)"', what)
            to_run.append((where, body, expects))
        else:
            failures.append(f"{where}: unknown directive {what!r}")
    if to_run:
        work = tempfile.mkdtemp(prefix="kvstore-docs-")
        env = dict(os.environ)
        env["PATH"] = os.path.join(root, "target", "debug") + os.pathsep + env.get("PATH", "")
        env.pop("KVCTL_ENDPOINTS", None)
        box = start_box(root, work)
        try:
            for where, body, expects in to_run:
                counts["run"] += 1
                if not box_ready(root, work):
                    failures.append(f"{where}: the box was not back to kvstore-0 leading with every pod ready")
                    continue
                try:
                    r = subprocess.run(
                        ["bash", "-c", runnable(body, root)],
                        cwd=work,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )
                except subprocess.TimeoutExpired:
                    failures.append(f"{where}: did not finish within 120 s")
                    continue
                output = r.stdout + r.stderr
                print(f"--- {where}: exit {r.returncode}")
                print(output.rstrip())
                if r.returncode != 0:
                    failures.append(f"{where}: exit {r.returncode}")
                for text in expects:
                    if text not in output:
                        failures.append(f"{where}: the output lacks {text!r}")
        finally:
            stop_box(box)
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"documentation commands: {counts['run']} blocks run, {counts['covered']} run elsewhere in CI, "
        f"{counts['skip']} skipped (need AWS, a synopsis, ...); links checked"
    )
    for f in failures:
        print(f"DOC CHECK FAILED: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
