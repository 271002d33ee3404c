"""Run lesson notebooks top to bottom as Jupyter's Run All does, and print each one's time and peak memory.

Every cell runs, whatever its test flag (`slow`, `cuda`, `net`): this is what a student's "Run All" and a Kaggle kernel do.
The notebooks are executed from copies (nothing is written back unless `--save DIR`).

    python benchmarks/run_lessons.py                 # every lesson notebook, nbs/[0-9]*.ipynb, in reading order
    python benchmarks/run_lessons.py nbs/04_train.ipynb --max-mb 4096 --max-min 15

Peak memory is the largest resident set of the kernel and all its child processes together, sampled every 0.2 s, or the
kernel's own high-water mark (`VmHWM`) if larger. Exit status 1 if a notebook fails or passes a limit.

`test_notebook` is the other way to run one, as the tests do: nbdev's `test_nb`, cells with a test flag skipped unless
forced (`benchmarks/gpu_check.py` forces the `cuda` cells). The module imports only the standard library at the top, so
that it loads on a GPU image without Jupyter.
"""
import argparse, configparser, json, os, re, subprocess, sys, threading, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def lesson_notebooks()->list: return sorted((ROOT/'nbs').glob('[0-9]*.ipynb'))

class PeakRSS(threading.Thread):
    "Sample the resident memory of process `pid` and its descendants until `stop()`; `peak` is in bytes."
    def __init__(self, pid, every=0.2):
        import psutil
        super().__init__(daemon=True)
        self.proc, self.every, self.peak, self._done = psutil.Process(pid), every, 0, threading.Event()
    def _rss(self)->int:
        import psutil
        total = 0
        for p in [self.proc] + self.proc.children(recursive=True):
            try: total += p.memory_info().rss
            except psutil.Error: pass
        return total
    def _hwm(self)->int:
        try: return next(int(l.split()[1])*1024 for l in open(f'/proc/{self.proc.pid}/status') if l.startswith('VmHWM'))
        except (OSError, StopIteration): return 0
    def run(self):
        import psutil
        while not self._done.wait(self.every):
            try: self.peak = max(self.peak, self._rss())
            except psutil.Error: return
    def stop(self)->int:
        self.peak = max(self.peak, self._hwm())
        self._done.set(); self.join()
        return self.peak

def run_notebook(path:Path, timeout:int=3600, save:Path|None=None)->dict:
    "Execute every cell of `path` in a fresh kernel (cwd: the notebook's folder); its status, seconds and peak memory."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.read(path, as_version=4)
    # as in Jupyter: the inline backend, figures kept; no IN_TEST (nbdev's `test_nb` sets it in its process, and the lessons' hidden
    # twins train only under it)
    env = {k: v for k, v in os.environ.items() if k not in ('MPLBACKEND', 'IN_TEST')}
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    start, err, mon = time.time(), None, None
    try:
        with client.setup_kernel(env=env):
            mon = PeakRSS(client.km.provisioner.pid); mon.start()
            for i, cell in enumerate(nb.cells): client.execute_cell(cell, i, execution_count=client.code_cells_executed + 1)
            peak = mon.stop()
    except CellExecutionError as e: err, peak = str(e).strip().splitlines()[-1], mon.stop() if mon else 0
    except Exception as e: err, peak = f'{type(e).__name__}: {e}', mon.stop() if mon else 0
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, save/path.name)
    return dict(notebook=path.name, ok=err is None, secs=time.time()-start, peak_mb=peak/2**20, error=err)

def tst_flags(root=ROOT)->list:
    "The test flags settings.ini declares (`tst_flags`)."
    cp = configparser.ConfigParser(); cp.read(Path(root)/'settings.ini')
    return cp['DEFAULT'].get('tst_flags', 'notest slow cuda net').split()

def flagged_notebooks(flag:str, root=ROOT)->dict:
    "Notebooks under `root/nbs` with at least one cell flagged `#| flag`: {path relative to `root`: number of such cells}."
    pat, res = re.compile(rf'^\s*#\s*\|\s*{re.escape(flag)}\b', re.M), {}
    for f in sorted((Path(root)/'nbs').rglob('*.ipynb')):
        if '.ipynb_checkpoints' in f.parts: continue
        n = sum(1 for c in json.loads(f.read_text())['cells'] if c['cell_type'] == 'code' and pat.search(''.join(c['source'])))
        if n: res[str(f.relative_to(root))] = n
    return res

_TEST_NB = """import sys, json
from pathlib import Path
from nbdev.test import test_nb
ok, secs = test_nb(Path(sys.argv[1]), skip_flags=json.loads(sys.argv[2]), force_flags=json.loads(sys.argv[3]), showerr=True)
print('RUN_LESSONS_NB', json.dumps(dict(ok=bool(ok), secs=secs)))
"""

def test_notebook(nb, # path of the notebook, relative to `root`
                  timeout:float, # seconds before it is killed
                  force_flags=('cuda',), # test flags whose cells run; the others' cells are skipped
                  root=ROOT, # the project (its settings.ini names the flags)
                  **env)->dict: # ok, secs, wall, skip_flags, force_flags; a failure's `tail` or `error`
    "nbdev's `test_nb(nb)` in a fresh python with `env` added to the environment, as `tests/test_notebooks.py` runs it."
    force = list(force_flags)
    skip = [f for f in tst_flags(root) if f not in force]
    t = time.perf_counter()
    try: p = subprocess.run([sys.executable, *(['-S'] if sys.flags.no_site else []), '-c', _TEST_NB, str(Path(root)/nb), json.dumps(skip), json.dumps(force)],
                            capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **env), cwd=root)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors='replace') if isinstance(e.stderr, bytes) else str(e.stderr or '')
        return dict(ok=False, secs=round(time.perf_counter()-t, 1), error=f'killed after {timeout:.0f}s', tail=err[-1500:])
    m = re.search(r'^RUN_LESSONS_NB (.*)$', p.stdout, re.M)
    r = json.loads(m.group(1)) if m else dict(ok=False, secs=None)
    r.update(wall=round(time.perf_counter()-t, 1), skip_flags=skip, force_flags=force)
    if not r['ok']: r['tail'] = (p.stderr + p.stdout)[-2500:]
    return r

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='*', type=Path, help='default: every lesson notebook, nbs/[0-9]*.ipynb')
    ap.add_argument('--max-mb', type=float, default=4096, help='flag a notebook whose peak memory passes this')
    ap.add_argument('--max-min', type=float, default=15, help='flag a notebook that takes longer than this many minutes')
    ap.add_argument('--timeout', type=int, default=3600, help='seconds one cell may take')
    ap.add_argument('--save', type=Path, help='write the executed notebooks (with outputs) into this folder')
    a = ap.parse_args(argv)
    nbs, bad = a.notebooks or lesson_notebooks(), 0
    print(f"Run All of {len(nbs)} notebook(s) on {os.cpu_count()} cores; limits {a.max_mb:.0f} MB, {a.max_min:g} min", flush=True)
    print(f"{'notebook':34} {'status':7} {'minutes':>8} {'peak MB':>8}", flush=True)
    for p in nbs:
        r = run_notebook(p, a.timeout, a.save)
        over = [s for s, o in (('memory', r['peak_mb'] > a.max_mb), ('time', r['secs'] > 60*a.max_min)) if o]
        status = 'ok' if r['ok'] and not over else 'FAILED' if not r['ok'] else 'OVER'
        bad += status != 'ok'
        print(f"{r['notebook']:34} {status:7} {r['secs']/60:8.1f} {r['peak_mb']:8.0f}" + (f"  {r['error']}" if r['error'] else '')
              + (f"  over the {' and '.join(over)} limit" if over else ''), flush=True)
    return 1 if bad else 0

if __name__ == '__main__': sys.exit(main())
