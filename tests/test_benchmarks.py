"Every benchmark runs at tiny size (so none can rot unseen), and README.md shows each committed result table verbatim."
import os, re, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'benchmarks'/'results'
ENV = {**os.environ, 'MPLBACKEND': 'Agg', 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1'}

def bench(script, *args, timeout=600):
    "Run `benchmarks/SCRIPT ARGS`; return its stdout after checking it succeeded"
    r = subprocess.run([sys.executable, ROOT/'benchmarks'/script, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r.stdout

def test_collab_smoke(tmp_path):
    "The like-for-like tables, one per sampling, each with its headline; even at smoke size the fast path takes less CPU than stock at every setting"
    out = bench('collab.py', '--smoke', '--results', tmp_path)
    md = (tmp_path/'collab.md').read_text()
    assert md.strip() in out  # the markdown it writes is what it prints
    assert 'median of 2' in md
    for smp in ('replace', 'perm'):
        ratio = float(re.search(rf'^ratio, {smp}: (\d+\.\d)×$', md, re.M).group(1))
        assert ratio > 1, (smp, ratio)
    for table in md.split('**Sampling:')[1:]:
        rows = [l.split(' | ') for l in table.splitlines() if l.startswith('| 64 |') or l.startswith('| 256 |')]
        assert sorted(r[3] for r in rows) == ['fast', 'fast', 'stock', 'stock']  # a stock and a fast row per setting
        t = {(r[0], r[3]): float(r[5].split()[0]) for r in rows}
        assert all(t[b,'fast'] < t[b,'stock'] for b in ('| 64', '| 256')), t

def test_collab_scale_smoke(tmp_path):
    "--scale at smoke size: the fast rows, the fast path's best chosen at the quality bar, stock timed over whole epochs, and at equal bs and lr the fast path takes less CPU"
    out = bench('collab.py', '--scale', '--smoke', '--results', tmp_path)
    md = (tmp_path/'collab_scale.md').read_text()
    assert md.strip() in out and re.search(r'^smoke epoch: \d+\.\d+ s$', md, re.M)
    assert "The fast path's best setting at the quality bar" in md and 'EXTRAPOLATED' not in md
    assert len([l for l in md.splitlines() if l.startswith('| stock | ')]) == 4  # 2 batch sizes x 1 and 2 threads, whole epochs
    q = [l.split(' | ') for l in md.splitlines() if re.match(r'^\| [\d,]+ \| [\d.e-]+ \| (stock|fast) \|', l)]
    assert [r[2] for r in q] == ['stock', 'fast', 'stock', 'fast'], q
    for st,fa in zip(q[::2], q[1::2]):
        assert st[:2] == fa[:2] and float(fa[4]) < float(st[4]), (st, fa)  # same bs and lr; the fast path takes less CPU

def test_collab_quality_smoke(tmp_path):
    out = bench('collab_quality.py', '--smoke', '--results', tmp_path)
    md = (tmp_path/'collab_quality.md').read_text()
    assert md.count('picked by `pick_best`') == 2 and len(re.findall(r'\*\*(MSE|RMSE) \d\.\d{4} ± \d\.\d{4}\*\*', md)) == 2

def test_imports_smoke(tmp_path):
    out = bench('imports.py', '--repeat', '1', '--only', 'paddy_collab.core', '--results', tmp_path)
    assert '| `paddy_collab.core` |' in (tmp_path/'imports.md').read_text() and 'paddy_collab.core' in out

def test_cli_timing_smoke(tmp_path):
    "The command-line timing script runs the commands it lists and writes their table"
    out = bench('cli_timing.py', '--smoke', '--results', tmp_path)
    md = (tmp_path/'cli_timing.md').read_text()
    assert md.strip() in out and '| `synth` | `paddy_collab synth ' in md and 'Load average at the start' in md

def collab_rows(section):
    "{(bs, lr, epochs, path): (median CPU-s to the target or inf, runs reaching it, the bound of a cut setting or None)} of one sampling's table in collab.md"
    rows = {}
    for l in section.splitlines():
        m = re.match(r'^\| (\d+) \| ([\d.e-]+) \| (\d) \| (stock|fast) \| [^|]* \| ([^|]*) \| (\d)/(\d)( \(\d cut\))? \| [\d.]+ \|$', l)
        if m:
            t = m.group(5).strip()
            rows[int(m.group(1)), float(m.group(2)), int(m.group(3)), m.group(4)] = (float(t.split()[0]) if t[0].isdigit() else float('inf'), int(m.group(6)),
                                                                        float(t.split()[1]) if t.startswith('>') else None)
    return rows

def test_committed_collab_table():
    "The committed like-for-like run: the whole grid for both paths under both samplings, 3 runs each, from a quiet machine, and each headline ratio is its table's stock best over its fast best"
    md = (RESULTS/'collab.md').read_text()
    load0 = float(re.search(r'Load average at the start ([\d.]+)', md).group(1))
    assert load0 < 1.5, load0
    assert 'median of 3' in md
    for smp in ('replace', 'perm'):
        section = md.split(f'ratio, {smp}:')[0].split('**Sampling:')[-1]
        rows = collab_rows(section)
        grid = {(b, l, e) for b in (64, 128, 256, 512, 1024, 2048, 4096) for l in (2e-3, 5e-3, 1e-2, 2e-2) for e in (3, 4, 5)}
        assert {k[:3] for k in rows} == grid and len(rows) == 2*len(grid), smp
        best = {p: min(v[0] for k,v in rows.items() if k[3] == p) for p in ('stock', 'fast')}
        ratio = float(re.search(rf'^ratio, {smp}: (\d+\.\d)×$', md, re.M).group(1))
        assert abs(ratio - best['stock']/best['fast']) <= 0.051, (smp, ratio, best)
        for k,(t,n,bound) in rows.items():  # a setting was cut only at or above its path's final best time: the cut cannot have changed the headline
            if bound is not None: assert bound >= best[k[3]], (k, bound, best)

def search_table(md):
    "The search table of one protocol's section of collab_quality.md, as `search` returns it (recipe, mse, cpu_s)"
    rows = [l.split('|')[1:4] for l in md.splitlines() if l.startswith('| ') and not l.startswith('| recipe')]
    return pd.DataFrame([(r.strip(), float(m), float(c)) for r,m,c in rows], columns=['recipe', 'mse', 'cpu_s'])

def test_committed_quality_figures():
    "collab_quality.md's held-out figures are the mean of their seeds and meet ref/08_collab_best's targets (lesson MSE <= 0.78, u1 RMSE <= 0.889); "
    "the pick printed is `pick_best` of the search table printed, and `BEST` is that recipe (a hand-edited `BEST` or table fails)"
    from paddy_collab.collab_best import BEST, CANDIDATES, pick_best
    md = (RESULTS/'collab_quality.md').read_text()
    for section,(metric,target) in zip(md.split('### ')[1:3], [('MSE', 0.78), ('RMSE', 0.889)]):  # the lesson protocol, then u1
        table = search_table(section.split('picked by')[0])
        assert len(table) >= 4, table
        pick = pick_best(table)
        assert CANDIDATES[pick] == BEST, pick
        assert re.search(rf'picked by `pick_best`: \*\*{re.escape(pick)}\*\*', section)
        m = re.search(rf'\*\*{metric} (\d\.\d{{4}}) ± (\d\.\d{{4}})\*\* over seeds \[[\d, ]+\] \(per seed MSE ([\d., ]+);', section)
        per_seed = np.array([float(v) for v in m.group(3).split(', ')])
        fig = per_seed if metric == 'MSE' else per_seed**0.5
        assert abs(fig.mean() - float(m.group(1))) <= 6e-5 and float(m.group(1)) <= target, (metric, m.group(0))

RESULT_FILES = sorted(p.name for p in RESULTS.glob('*.md'))

def test_results_committed(): assert {'collab.md', 'collab_scale.md', 'collab_quality.md'} <= set(RESULT_FILES)

@pytest.mark.parametrize('name', RESULT_FILES)
def test_readme_shows_results(name):
    "README's results tables are the benchmarks' own output: `benchmarks/results/NAME`, pasted verbatim"
    table = (RESULTS/name).read_text().strip()
    assert table in (ROOT/'README.md').read_text(), f"README.md does not contain benchmarks/results/{name} verbatim: paste it into nbs/index.ipynb and run `make readme`"
