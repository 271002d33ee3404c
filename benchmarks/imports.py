"""Import time of `paddy_collab` and each submodule, each in a fresh process, next to `fastai.vision.all` as a reference.

Run: `.venv/bin/python benchmarks/imports.py [--repeat 3]`. Prints the best of `--repeat` wall times per module (target: < 5 s).
"""
import argparse, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def import_time(mod:str)->float:
    "Seconds to import `mod` in a fresh interpreter (interpreter start-up excluded)."
    code = f"import time; t=time.perf_counter(); import {mod}; print(time.perf_counter()-t)"
    return float(subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True, check=True).stdout)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeat', type=int, default=3)
    ap.add_argument('--only', nargs='*', help='these modules only (e.g. paddy_collab.core); default: the package, every submodule and fastai.vision.all')
    ap.add_argument('--results', help=f"folder for imports.md (default {ROOT/'benchmarks'/'results'}; with --only: none written)")
    a = ap.parse_args()
    mods = a.only or ['fastai.vision.all (reference)', 'paddy_collab'] + [f'paddy_collab.{p.stem}' for p in sorted((ROOT/'paddy_collab').glob('*.py')) if not p.stem.startswith('_')]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; best of {a.repeat}")
    md = [f"`python benchmarks/imports.py --repeat {a.repeat}`: best of {a.repeat} fresh-process imports "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; target < 5 s)", '', '| module | import, s |', '|---|---:|']
    for m in mods:
        best = min(import_time(m.split()[0]) for _ in range(a.repeat))
        print(f"{m:40s} {best:5.2f} s {'' if best < 5 else '  (over 5 s)'}", flush=True)
        md.append(f"| `{m.split()[0]}`{' (reference)' if 'reference' in m else ''} | {best:.2f} |")
    if a.results or not a.only:
        out = Path(a.results or ROOT/'benchmarks'/'results'); out.mkdir(parents=True, exist_ok=True)
        (out/'imports.md').write_text('\n'.join(md)+'\n')
