"""Import benchmark: `newsletter subscribers import` of a CSV of N subscribers on SQLite, first and again.

Generates a CSV of N rows shaped like a real list (seven in ten addresses at five big domains, the rest spread
over 4,000 smaller ones, some internationalised; four in five take every category of their newsletters, one in
five chooses one to three; one in twenty is not active; a tenth carry the consent columns an export writes), then
times whole processes, interpreter start-up included, interleaved run by run:

- the bare baseline: a python csv.reader loop, `email_validator.validate_email` on every address, and one
  sqlite3 executemany insert into a fresh database (no other rule checked);
- `newsletter subscribers import` into a fresh SQLite database (a first import);
- `newsletter subscribers import` of the same file again into that database (every row unchanged);
- `newsletter subscribers export` of the imported database.

    .venv/bin/python bench/import.py [--rows 100000] [--runs 5]

Prints a markdown table of medians (all runs listed) and each command's ratio to the bare baseline. With
`--before DIR`, the three newsletter commands are also timed, interleaved, with the `newsletter` package found in
DIR (an older version: `mkdir DIR && git archive <commit> newsletter | tar -x -C DIR`), for a before/after table.
Target (2 cores): a first import and an unchanged re-import of 100,000 rows each under 3 s.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NOW = "2026-01-05T07:00:00+00:00"  # the sample site's posts run to 4 January 2026
SITE_CATEGORIES = ["Culture", "Science", "Technology", "Travel"]
LAB_CATEGORIES = ["Technology", "Science"]
FIRST = ["ana", "ben", "chloé", "dev", "eva", "femi", "gus", "hana", "ivo", "jun", "kai", "lea", "mo", "nia"]
LAST = ["souza", "okafor", "martin", "patel", "nowak", "ito", "berg", "costa", "diallo", "müller"]
DOMAINS = ["example.org", "example.com", "mail.example.net", "post.example.co.uk", "bücher.example"]
TLDS = ["example", "example.com", "example.org", "example.net"]

BARE = """
import csv, sqlite3, sys
from email_validator import validate_email
db = sqlite3.connect(sys.argv[2])
db.execute("CREATE TABLE subscribers (id INTEGER PRIMARY KEY, email TEXT, email_key TEXT UNIQUE, name TEXT, "
           "status TEXT)")
with open(sys.argv[1], encoding="utf-8", newline="") as stream:
    reader = csv.reader(stream)
    next(reader)
    rows = []
    for email, name, *_ in reader:
        address = validate_email(email, check_deliverability=False, allow_smtputf8=False).normalized
        rows.append((address, address.casefold(), name, "active"))
with db:
    db.executemany("INSERT INTO subscribers (email, email_key, name, status) VALUES (?, ?, ?, ?)", rows)
print(len(rows))
"""


def domain(rng: random.Random) -> str:
    """Seven addresses in ten at a few big providers, the rest at one of 4,000 smaller domains."""
    if rng.random() < 0.7:
        return rng.choice(DOMAINS)
    return f"{rng.choice(['firma', 'büro', 'studio', 'lab'])}{rng.randrange(250)}.{rng.choice(TLDS)}"


def make_csv(path: Path, rows: int, rng: random.Random) -> None:
    with open(path, "w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["email", "name", "newsletters", "categories", "status", "signed_up_at", "signup_ip"])
        for n in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            local = f"{first}.{last}{n}".encode("ascii", "ignore").decode()  # SMTPUTF8 local parts are refused
            email = f"{local}@{domain(rng)}"
            if rng.random() < 0.1:
                email = email.capitalize()
            newsletters = rng.choice(["weekly", "weekly", "weekly;lab", "lab"])
            categories = ""
            if rng.random() < 0.2:
                pool = LAB_CATEGORIES if newsletters == "lab" else SITE_CATEGORIES
                if "lab" in newsletters and newsletters != "lab":
                    pool = LAB_CATEGORIES  # a bare category applies to both: it must be one lab carries
                categories = ";".join(rng.sample(pool, rng.randint(1, min(3, len(pool)))))
            status = "active" if rng.random() < 0.95 else rng.choice(["unsubscribed", "bounced", "complained"])
            signed, ip = "", ""
            if rng.random() < 0.1:
                signed = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:17:00+00:00"
                ip = rng.choice([f"192.0.2.{rng.randint(1, 254)}", f"2001:db8::{rng.randint(1, 9999):x}"])
            writer.writerow([email, f"{first.title()} {last.title()}", newsletters, categories, status, signed, ip])


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--before", type=Path, help="also time the newsletter package found in this folder")
    args = parser.parse_args()
    versions = {"": None, " (before)": args.before} if args.before else {"": None}
    times: dict[str, list[float]] = {"bare": []}
    loads = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        big = work / "big.csv"
        make_csv(big, args.rows, random.Random(args.seed))
        newsletter = [str(BIN / "newsletter"), "--now", NOW]
        for run in range(args.runs):
            times["bare"].append(timed([sys.executable, "-c", BARE, str(big), str(work / f"bare{run}.db")],
                                       dict(os.environ)))
            for suffix, package in versions.items():
                db = work / f"run{run}{suffix.strip(' ()')}.db"
                env = {**os.environ, "NEWSLETTER_DATABASE_URL": f"sqlite:///{db}"}
                if package is not None:
                    env["PYTHONPATH"] = str(package.resolve())
                for key, command in (("first", ["subscribers", "import", str(big)]),
                                     ("again", ["subscribers", "import", str(big)]),
                                     ("export", ["subscribers", "export", "--out", str(work / "out.csv")])):
                    times.setdefault(key + suffix, []).append(timed(newsletter + command, env))
            loads.append(os.getloadavg()[0])
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                  + f"; load {loads[-1]:.1f}", file=sys.stderr)
    bare = statistics.median(times["bare"])
    labels = {"bare": "bare baseline (csv + validate_email + sqlite3 executemany)",
              "first": "`subscribers import`, first (fresh database)",
              "again": "`subscribers import`, the same file again (all unchanged)",
              "export": "`subscribers export --out`"}
    print(f"{args.rows:,} rows, {args.runs} interleaved runs, load average {min(loads):.1f} to {max(loads):.1f}\n")
    print("| what | median | runs | ratio to bare |")
    print("| --- | --- | --- | --- |")
    for key, values in times.items():
        name, _, suffix = key.partition(" ")
        median = statistics.median(values)
        runs = ", ".join(f"{t:.2f}" for t in values)
        print(f"| {labels[name]}{' ' + suffix if suffix else ''} | {median:.2f} s | {runs} | {median / bare:.2f} |")


if __name__ == "__main__":
    main()
