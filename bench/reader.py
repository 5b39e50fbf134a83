"""Reader benchmark: selecting last week's posts out of N versus python-frontmatter loading the same files.

Both sides run as whole processes (interpreter start and imports included), interleaved, several times; the
script prints the medians and their ratio. The target: the ratio is at most 1.5.

    .venv/bin/python bench/reader.py [--posts 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

CATEGORIES = ["Technology", "Science", "Culture", "Travel", "Food", "Sport"]
WORDS = ("harbour tide lantern ferry market island signal data survey quay storm library telescope radio "
         "mooring plankton cliff path music sensor gauge boat crew weather").split()
NOW = datetime(2026, 1, 5, 7, 0)


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def make_site(root: Path, count: int, seed: int = 7) -> None:
    """A Jekyll site with `count` posts shaped like a real news site's, about 2 KB each, over ~8 years."""
    rng = random.Random(seed)
    posts = root / "_posts"
    posts.mkdir(parents=True)
    (root / "_config.yml").write_text("title: Bench\nurl: https://bench.example.org\ntimezone: UTC\n")
    for i in range(count):
        when = NOW - timedelta(minutes=rng.randrange(0, 8 * 365 * 24 * 60))
        slug = f"{'-'.join(rng.choice(WORDS) for _ in range(4))}-{i}"
        body = "\n\n".join(" ".join(sentence(rng, 12) for _ in range(4)) for _ in range(4))
        front = [
            "---", "layout: post", f'title: "{sentence(rng, 6)}"', f"date: {when:%Y-%m-%dT%H:%M:%S}",
            f'author: "{rng.choice(["Ada", "Tobias", "Imogen", "Mara"])} {rng.choice(["Quill", "Wren", "Hart"])}"',
            f"categories: [{rng.choice(CATEGORIES)}]", "tags: []", f'excerpt: "{sentence(rng, 20)}"',
            f"image: assets/images/{rng.getrandbits(128):032x}.jpg", "---", "",
        ]
        (posts / f"{when:%Y-%m-%d}-{slug}.md").write_text("\n".join(front) + body + "\n")


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        make_site(site, args.posts)
        baseline = [sys.executable, "-c",
                    "import sys, pathlib, frontmatter\n"
                    "posts = [frontmatter.load(p) for p in sorted(pathlib.Path(sys.argv[1]).rglob('_posts/*.md'))]\n"
                    "print(len(posts))", str(site)]
        since = (NOW - timedelta(days=7)).isoformat()
        ours = [str(bindir / "newsletter"), "--now", NOW.isoformat(), "posts", "--source", str(site),
                "--since", since, "--json"]
        selected = subprocess.run(ours, check=True, capture_output=True, text=True).stdout.count('"path"')
        timed(baseline), timed(ours)  # warm the page cache for both
        base_times, our_times = [], []
        for _ in range(args.runs):
            base_times.append(timed(baseline))
            our_times.append(timed(ours))
    base, mine = statistics.median(base_times), statistics.median(our_times)
    print(f"posts: {args.posts}, selected (last 7 days): {selected}, runs: {args.runs}")
    print(f"python-frontmatter load, whole process: median {base:.2f} s  ({', '.join(f'{t:.2f}' for t in base_times)})")
    print(f"newsletter posts --since, whole process: median {mine:.2f} s  ({', '.join(f'{t:.2f}' for t in our_times)})")
    print(f"ratio newsletter / python-frontmatter: {mine / base:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
