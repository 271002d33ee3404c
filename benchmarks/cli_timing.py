#!/usr/bin/env python
"""Time README's command-line examples: each command run once, in order, in a scratch folder, wall and CPU seconds.

    python benchmarks/cli_timing.py            # the README's table: synth, train-paddy, predict, submit --dry-run, train-collab, recommend, push-kernel --dry-run, demo
    python benchmarks/cli_timing.py --smoke    # synth, predict on a tiny set and recommend, no demo (tests/test_benchmarks.py)

The commands are those of the README's table, run as `python -m paddy_collab.cli ...` (what the `paddy_collab` entry point
runs). CPU seconds are those of the command's process and its children (user+sys); wall seconds include Python's start
and the imports. The table goes to `benchmarks/results/cli_timing.md`.
"""
from __future__ import annotations
import argparse, os, re, resource, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'benchmarks'/'results'

# (command name as in the README, arguments, what the README's example says it does)
COMMANDS = [
    ('synth', 'synth data/paddy_synth --n-per-class 20 --n-test 30', '200 images, 480×640'),
    ('train-paddy', 'train-paddy --data data/paddy_synth --ensemble tiny --size 32 --epochs 10 --lr 0.01 --no-finetune --multi-target '
                    '--no-pretrained --out outputs/paddy', 'the set above'),
    ('predict', 'predict outputs/paddy --data data/paddy_synth --out submission.csv', ''),
    ('submit --dry-run', 'submit outputs/paddy --data data/paddy_synth --out submission2.csv -m timing --dry-run', 'checks the CSV, no upload'),
    ('train-collab', 'train-collab --model bias --out outputs/collab', 'MovieLens 100k, 5 epochs, bs 64, fast loaders'),
    ('recommend', 'recommend outputs/collab --user 42 --like "Star Wars (1977)" -n 5', ''),
    ('push-kernel --dry-run', f'push-kernel {ROOT}/nbs/05_ensemble.ipynb --gpu --dry-run kernel', 'writes the kernel files, no upload'),
    ('demo', 'demo --out outputs/demo', 'collab + a two-model Paddy ensemble + submission'),
]
SMOKE = [
    ('synth', 'synth data/paddy_synth --n-per-class 2 --n-test 3 --size 32 48', ''),
    ('recommend --help', 'recommend --help', ''),
]

def children_cpu()->float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime+r.ru_stime

def load_avg()->str: return ' '.join(f'{x:.2f}' for x in os.getloadavg())

def run(args:str, cwd:Path, timeout:float)->tuple[float,float,str]:
    "(wall s, CPU s, output) of `python -m paddy_collab.cli ARGS` in `cwd`; raises if it fails"
    import shlex
    c,t = children_cpu(),time.perf_counter()
    r = subprocess.run([sys.executable, '-m', 'paddy_collab.cli', *shlex.split(args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, 'PYTHONPATH': str(ROOT), 'MPLBACKEND': 'Agg', 'HF_HUB_OFFLINE': '1'})
    w,cpu = time.perf_counter()-t,children_cpu()-c
    if r.returncode: raise SystemExit(f"`paddy_collab {args}` failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return w,cpu,r.stdout+r.stderr

def note(name, out):
    "A figure the command prints that the README quotes beside its time (train-collab: the valid MSE)"
    if name=='train-collab' and (m := re.search(r'valid[_ ]MSE[^0-9]*([0-9]\.[0-9]+)', out, re.I)): return f"valid MSE {float(m.group(1)):.3f}"
    return ''

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--smoke', action='store_true', help='two quick commands: checks the script runs; figures mean nothing')
    p.add_argument('--results', help=f'folder for cli_timing.md (default {RESULTS}; with --smoke: none written)')
    p.add_argument('--only', nargs='*', help='run only these commands (by their name in the table)')
    p.add_argument('--timeout', type=float, default=900, help='seconds allowed per command')
    a = p.parse_args(argv)
    cmds = SMOKE if a.smoke else [c for c in COMMANDS if not a.only or c[0] in a.only]
    load0 = load_avg()
    print(f"# benchmarks/cli_timing.py {' '.join(sys.argv[1:])}  {time.strftime('%Y-%m-%d %H:%M:%S')}  cpus={os.cpu_count()}  load {load0}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name,args,what in cmds:
            w,c,out = run(args, Path(d), a.timeout)
            n = note(name, out)
            print(f"{name}: {w:.1f} s wall, {c:.1f} s CPU {n}", flush=True)
            rows.append(f"| `{name}` | `paddy_collab {args.replace(str(ROOT)+'/', '')}` | {w:.1f} | {c:.1f} | {'; '.join(o for o in (what, n) if o)} |")
    md = '\n'.join([f"`python benchmarks/cli_timing.py{' --smoke' if a.smoke else ''}`: each command once, in this order, in a scratch folder, "
                    f"on {os.cpu_count()} cores; wall seconds include Python's start and the imports; CPU seconds are the command's process "
                    f"and its children (user+sys). Load average at the start {load0}, at the end {load_avg()}.", '',
                    '| command | example | wall s | CPU s | note |', '|---|---|---:|---:|---|', *rows])
    print('\n'+md)
    if a.results or not a.smoke:
        out = Path(a.results or RESULTS); out.mkdir(parents=True, exist_ok=True)
        (out/'cli_timing.md').write_text(md+'\n')

if __name__=='__main__': main()
