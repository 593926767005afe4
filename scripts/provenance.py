#!/usr/bin/env python3
"""Every committed report's runs point at code the repository holds.

  scripts/provenance.py          list, per report, runs whose code cannot be recovered
  scripts/provenance.py --check  the same; exit 1 if a report outside PENDING has one

A run's code is recoverable when its record's provenance.git_commit names a
commit this repository holds and, for a tree with uncommitted changes
("...-dirty"), the record names a diff_hash whose diffs/<hash>.patch is in the
run folder and has that SHA-256 (`git checkout COMMIT && git apply PATCH`).
Records from before diffs were kept name none.

PENDING lists the reports made from uncommitted trees before that, with the
issue that reruns them on committed code; each leaves the list when it does.
"""
import glob
import hashlib
import json
import os
import subprocess
import sys

# report -> the issue whose rerun replaces it
PENDING = {
    "drift": "27 (robust learning: reruns every learned suite on its defaults)",
    "recall": "27",
    "recall-ablation": "27",
    "recall-long": "27",
    "entity-long": "27",
    "entity-updates": "27",
}


def shallow():
    r = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], capture_output=True, text=True)
    return r.stdout.strip() == "true"


def commit_exists(sha, cache={}):
    if "shallow" not in cache:
        cache["shallow"] = shallow()
        if cache["shallow"]:
            print("a shallow clone: commits are not checked, only diffs")
    if cache["shallow"]:
        return True
    if sha not in cache:
        r = subprocess.run(
            ["git", "cat-file", "-e", f"{sha}^{{commit}}"],
            capture_output=True,
        )
        cache[sha] = r.returncode == 0
    return cache[sha]


def problem(folder, record):
    prov = record.get("provenance", {})
    commit = prov.get("git_commit", "unknown")
    sha = commit[: -len("-dirty")] if commit.endswith("-dirty") else commit
    # `git describe` may print TAG-N-gSHA.
    sha = sha.rsplit("-g", 1)[-1]
    if commit == "unknown" or not commit_exists(sha):
        return f"commit {commit} is not in this repository"
    if not commit.endswith("-dirty"):
        return None
    h = prov.get("diff_hash")
    if not h:
        return f"made from {commit} with uncommitted changes that were not kept"
    patch = os.path.join(folder, "diffs", f"{h}.patch")
    if not os.path.isfile(patch):
        return f"{patch} is missing"
    with open(patch, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != h:
            return f"{patch} does not hash to {h}"
    return None


def main():
    check = "--check" in sys.argv[1:]
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    os.chdir(root)
    failed = False
    for folder in sorted(glob.glob("reports/*/")):
        runs = sorted(glob.glob(os.path.join(folder, "runs", "*.json")))
        if not runs:
            continue
        name = os.path.basename(folder.rstrip("/"))
        bad = []
        for path in runs:
            with open(path) as f:
                why = problem(folder, json.load(f))
            if why:
                bad.append((os.path.basename(path), why))
        if not bad:
            print(f"{name}: {len(runs)} runs, every one from code the repository holds")
            continue
        owner = PENDING.get(name)
        tag = f"pending issue {owner}" if owner else "FAIL"
        print(f"{name}: {len(bad)} of {len(runs)} runs from code the repository does not hold ({tag})")
        for run, why in bad[:3]:
            print(f"  {run}: {why}")
        failed |= owner is None
    for name in sorted(set(PENDING) - {os.path.basename(f.rstrip('/')) for f in glob.glob('reports/*/')}):
        print(f"PENDING names {name}, which has no report")
    if check and failed:
        print("a committed report holds runs whose code cannot be recovered: rerun it on committed code")
        sys.exit(1)


if __name__ == "__main__":
    main()
