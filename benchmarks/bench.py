"""Speed and scale benchmark (same as `sagefm bench`): writes JSON and prints a Markdown table.

python benchmarks/bench.py --data-dir ../shared/data --output runs/bench/bench.json
"""

import sys

from sagefm.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
