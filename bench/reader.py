"""Reader benchmark: selecting last week's posts out of N, cold and through the post cache, against
python-frontmatter loading the same files.

For each site shape the script generates a Jekyll site and times whole processes (interpreter start-up and
imports included), interleaved, several times:

- bare: a python-frontmatter loop, `frontmatter.load` on every post file;
- cold: `newsletter --no-cache --now ... posts --source SITE --since <7 days before> --json`;
- first read: the same without --no-cache and no cache file yet (it parses every post and writes the cache);
- warm: the same again, the cache written and the site unchanged;
- one changed: the same after one post's modification time changed (one parse, and the cache rewritten).

It prints the medians as markdown tables ready to paste into BENCHMARKS.md, wall-clock time and CPU time
(user + system, which other work on the machine disturbs less), with each median's ratio to the bare loop
measured in the same run. Targets: cold within 1.2 times the bare loop, warm under 0.3 times.

    .venv/bin/python bench/reader.py [--posts 20000] [--runs 5] [--shapes news,notes,longform] [--older DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

CATEGORIES = ["Technology", "Science", "Culture", "Travel", "Food", "Sport"]
WORDS = ("harbour tide lantern ferry market island signal data survey quay storm library telescope radio "
         "mooring plankton cliff path music sensor gauge boat crew weather").split()
NOW = datetime(2026, 1, 5, 7, 0)
OLD_NS = 1_577_880_000_000_000_000  # 2020-01-01: every generated file is older than any read


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def paragraphs(rng: random.Random, count: int, sentences: int) -> str:
    return "\n\n".join(" ".join(sentence(rng, 12) for _ in range(sentences)) for _ in range(count))


def when(rng: random.Random) -> datetime:
    return NOW - timedelta(minutes=rng.randrange(0, 8 * 365 * 24 * 60))


def news(rng: random.Random, i: int) -> tuple[str, str]:
    """A news site's post, about 2 KB: nine front-matter keys, a naive datetime and the category in the front
    matter, an excerpt of its own; all in one _posts/ folder."""
    moment, slug = when(rng), f"{'-'.join(rng.choice(WORDS) for _ in range(4))}-{i}"
    front = [
        "---", "layout: post", f'title: "{sentence(rng, 6)}"', f"date: {moment:%Y-%m-%dT%H:%M:%S}",
        f'author: "{rng.choice(["Ada", "Tobias", "Imogen", "Mara"])} {rng.choice(["Quill", "Wren", "Hart"])}"',
        f"categories: [{rng.choice(CATEGORIES)}]", "tags: []", f'excerpt: "{sentence(rng, 20)}"',
        f"image: assets/images/{rng.getrandbits(128):032x}.jpg", "---", "",
    ]
    return f"_posts/{moment:%Y-%m-%d}-{slug}.md", "\n".join(front) + paragraphs(rng, 4, 4) + "\n"


def notes(rng: random.Random, i: int) -> tuple[str, str]:
    """A notebook's post, about 500 bytes: a title and tags only, the date in the file name, the category
    from the folder (`Technology/_posts/...`), the excerpt the first paragraph."""
    moment, slug = when(rng), f"{'-'.join(rng.choice(WORDS) for _ in range(3))}-{i}"
    front = ["---", f"title: {sentence(rng, 5)[:-1]}", f"tags: [{rng.choice(WORDS)}, {rng.choice(WORDS)}]",
             "---", ""]
    name = f"{rng.choice(CATEGORIES).lower()}/_posts/{moment:%Y-%m-%d}-{slug}.md"
    return name, "\n".join(front) + paragraphs(rng, 3, 2) + "\n"


def longform(rng: random.Random, i: int) -> tuple[str, str]:
    """A magazine's post, about 6 KB: forty front-matter lines (nested SEO and author mappings, lists, a quoted
    date with an offset), categories as a spaced string, a long body with an excerpt separator."""
    moment, slug = when(rng), f"{'-'.join(rng.choice(WORDS) for _ in range(5))}-{i}"
    front = [
        "---", "layout: article", f"title: '{sentence(rng, 9)}'", f"subtitle: {sentence(rng, 14)}",
        f'date: "{moment:%Y-%m-%d %H:%M:%S} +0100"', f"categories: {rng.choice(CATEGORIES)} {rng.choice(CATEGORIES)}",
        "tags:", *[f"  - {rng.choice(WORDS)}" for _ in range(8)],
        "authors:", *[f"  - name: {rng.choice(['Ada', 'Imogen', 'Mara'])} {rng.choice(['Quill', 'Hart'])}\n"
                      f"    email: writer{rng.randrange(100)}@example.org" for _ in range(2)],
        "seo:", f"  description: {sentence(rng, 25)}", f"  keywords: [{', '.join(rng.sample(WORDS, 6))}]",
        f"  canonical: https://bench.example.org/{slug}/", "image:",
        f"  path: /assets/{rng.getrandbits(64):016x}.jpg", f"  alt: {sentence(rng, 8)}",
        f"reading_time: {rng.randrange(3, 30)}", f"featured: {rng.choice(['true', 'false'])}",
        f"series: {rng.choice(WORDS)}", f"part: {rng.randrange(1, 9)}", "comments: true", "toc: true",
        "excerpt_separator: <!--more-->", f"updated: {moment + timedelta(days=3):%Y-%m-%d}",
        f"sources: [{', '.join(f'https://example.org/{rng.choice(WORDS)}' for _ in range(3))}]", "---", "",
    ]
    body = paragraphs(rng, 2, 3) + "\n\n<!--more-->\n\n" + paragraphs(rng, 12, 5)
    return f"_posts/{moment:%Y-%m-%d}-{slug}.md", "\n".join(front) + body + "\n"


SHAPES: dict[str, Callable[[random.Random, int], tuple[str, str]]] = {
    "news": news, "notes": notes, "longform": longform}


def make_site(root: Path, count: int, shape: str = "news", seed: int = 7) -> None:
    """A Jekyll site of `count` posts of one shape, every file dated 2020 (older than any read)."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "_config.yml").write_text("title: Bench\nurl: https://bench.example.org\ntimezone: UTC\n")
    for i in range(count):
        name, text = SHAPES[shape](rng, i)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, ns=(OLD_NS, OLD_NS))


def timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=cwd, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_shape(shape: str, posts: int, runs: int, tmp: Path, older: Path | None
                ) -> dict[str, list[tuple[float, float]]]:
    site, work = tmp / shape, tmp / f"{shape}-cwd"
    make_site(site, posts, shape)
    work.mkdir()
    bare = [sys.executable, "-c",
            "import sys, pathlib, frontmatter\n"
            "posts = [frontmatter.load(p) for p in sorted(pathlib.Path(sys.argv[1]).rglob('_posts/*.md'))]\n"
            "print(len(posts))", str(site)]
    ours = [str(Path(sys.executable).parent / "newsletter"), "--now", NOW.isoformat(), "posts", "--source",
            str(site), "--since", (NOW - timedelta(days=7)).isoformat(), "--json"]
    no_cache = [ours[0], "--no-cache", *ours[1:]]
    cache = work / ".newsletter-cache"
    changed = sorted(site.rglob("_posts/*.md"))[posts // 2]
    out = subprocess.run(ours, check=True, capture_output=True, text=True, cwd=work).stdout
    selected = out.count('"path"')
    print(f"{shape}: {posts} posts, {selected} selected; cache "
          f"{sum(f.stat().st_size for f in cache.iterdir()) / 1e6:.1f} MB", file=sys.stderr)
    timed(bare, work)  # the page cache warmed for both
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in ("bare", "cold", "first", "warm", "changed")}
    old_env = {**os.environ, "PYTHONPATH": str(older)} if older else None
    old_code = [sys.executable, "-m", "newsletter", *ours[1:]]
    for run in range(runs):
        times["bare"].append(timed(bare, work))
        if older:
            times.setdefault("older", []).append(timed(old_code, work, old_env))
        times["cold"].append(timed(no_cache, work))
        shutil.rmtree(cache)
        times["first"].append(timed(ours, work))
        times["warm"].append(timed(ours, work))
        os.utime(changed, ns=(OLD_NS + run + 1, OLD_NS + run + 1))  # an edit (an old time, so it is cached)
        times["changed"].append(timed(ours, work))
    return times


def table(results: dict[str, dict[str, list[tuple[float, float]]]], which: int, posts: int) -> str:
    older = "older" in next(iter(results.values()))
    head = ("| shape | bare python-frontmatter | " + ("older code (--older) | ratio | " if older else "") +
            "cold, no cache | ratio | first read, writing the cache | ratio "
            "| warm, unchanged | ratio | one post changed | ratio |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for shape, times in results.items():
        median = {k: statistics.median(t[which] for t in v) for k, v in times.items()}
        cells = [f"{shape} ({posts:,})", f"{median['bare']:.2f} s"]
        for key in ("older", "cold", "first", "warm", "changed")[0 if "older" in times else 1:]:
            cells += [f"{median[key]:.2f} s", f"{median[key] / median['bare']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--older", type=Path, help="Also time `python -m newsletter` from this source tree "
                        "(e.g. `git archive` of an older commit), cold, in the same runs.")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            results[shape] = bench_shape(shape, args.posts, args.runs, Path(tmp), args.older)
    load_after = os.getloadavg()
    print(f"Medians of {args.runs} interleaved runs; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after, on {os.cpu_count()} cores.\n")
    print("Wall-clock time, ratio to the bare loop (targets: cold <= 1.2, warm < 0.3):\n")
    print(table(results, 0, args.posts))
    print("\nCPU time (user + system), ratio to the bare loop:\n")
    print(table(results, 1, args.posts))
    print("\nEvery run, wall-clock seconds:\n")
    for shape, times in results.items():
        print(f"- {shape}: " + "; ".join(f"{k} {', '.join(f'{w:.2f}' for w, _ in v)}" for k, v in times.items()))


if __name__ == "__main__":
    main()
