"""Drain3 (PyPI `drain3`, default settings) over one log: prints each line's cluster id, then
`seconds <time spent in add_log_message>`, the best of three passes with a fresh miner each
(interpreter start-up and reading excluded), as the Rust side takes its best pass too."""
import sys, time
from drain3 import TemplateMiner

lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
took = None
for _ in range(3):
    miner = TemplateMiner()
    ids = []
    start = time.perf_counter()
    for line in lines:
        ids.append(miner.add_log_message(line)["cluster_id"])
    spent = time.perf_counter() - start
    took = spent if took is None else min(took, spent)
out = sys.stdout
for i in ids:
    out.write(f"{i}\n")
out.write(f"seconds {took}\n")
