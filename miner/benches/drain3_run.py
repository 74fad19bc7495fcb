"""Drain3 (PyPI `drain3`, default settings) over one log: prints each line's cluster id, then
`seconds <time spent in add_log_message>` (interpreter start-up and reading excluded)."""
import sys, time
from drain3 import TemplateMiner

lines = open(sys.argv[1], encoding="utf-8", errors="replace").read().split("\n")
if lines and lines[-1] == "":
    lines.pop()
miner = TemplateMiner()
ids = []
start = time.perf_counter()
for line in lines:
    ids.append(miner.add_log_message(line)["cluster_id"])
took = time.perf_counter() - start
out = sys.stdout
for i in ids:
    out.write(f"{i}\n")
out.write(f"seconds {took}\n")
