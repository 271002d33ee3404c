#!/usr/bin/env python
"""Training throughput of the distributed test worker in 1 process (1 and 2 threads) and in 2 processes (1 thread each), side by side.

    python benchmarks/distributed_throughput.py

It prints; it asserts nothing (it was `tests/test_distributed.py::test_throughput`, a print-only test, moved here). The
worker, its jobs (`ml100k`, `paddy`) and `run_worker` are the ones `tests/test_distributed.py` checks.
"""
import os, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT/'tests')]
from test_distributed import run_worker, load
from paddy_collab.synth import synth_paddy

def throughput(tmp:Path)->list:
    "One line per (processes, threads): MovieLens ratings/s, Paddy images/s, and launch-to-exit seconds"
    paddy = synth_paddy(tmp/'paddy', n_per_class=8, n_test=6, size=(64, 80))
    rows = []
    for nproc,threads in [(1, 1), (1, 2), (2, 1)]:
        out = tmp/f'{nproc}x{threads}'/'out'
        t = time.time()
        if nproc == 1: run_worker(out, ['ml100k', 'paddy'], paddy, threads=threads, subprocess_=True)
        else: run_worker(out, ['ml100k', 'paddy'], paddy, nproc=2, threads=threads)
        wall = time.time() - t
        m,p = load(out, 'ml100k'),load(out, 'paddy')
        rows.append(f"{nproc} process(es) x {threads} thread(s): MovieLens fit {m['n_train']/m['secs']:8,.0f} ratings/s "
                    f"(valid MSE {m['valid_loss']:.3f}); Paddy train() {p['n_train']/p['secs']:6.1f} images/s; launch to exit {wall:5.1f}s")
    return rows

if __name__ == '__main__':
    print('load average at the start:', ' '.join(f'{x:.2f}' for x in os.getloadavg()))
    with tempfile.TemporaryDirectory() as d: print('\n'.join(throughput(Path(d))))
    print('load average at the end:', ' '.join(f'{x:.2f}' for x in os.getloadavg()))
