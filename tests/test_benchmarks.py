"Every benchmark runs at tiny size (so none can rot unseen), and README.md shows each committed result table verbatim."
import os, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT/'benchmarks'/'results'
ENV = {**os.environ, 'MPLBACKEND': 'Agg', 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1'}

def bench(script, *args, timeout=600):
    "Run `benchmarks/SCRIPT ARGS`; return its stdout after checking it succeeded"
    r = subprocess.run([sys.executable, ROOT/'benchmarks'/script, *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r.stdout

def test_collab_smoke(tmp_path):
    out = bench('collab.py', '--smoke', '--results', tmp_path)
    md = (tmp_path/'collab.md').read_text()
    assert md.strip() in out  # the markdown it writes is what it prints
    assert re.search(r'^ratio vs stock best: \d+\.\d×$', md, re.M) and re.search(r'^ratio vs stock bs=64: \d+\.\d×$', md, re.M)
    rows = [l for l in md.splitlines() if l.startswith('| 64 |') or l.startswith('| 256 |')]
    assert sorted(l.split(' | ')[3] for l in rows) == ['fast', 'fast', 'stock', 'stock']  # a stock and a fast row per setting

def test_collab_scale_smoke(tmp_path):
    out = bench('collab.py', '--scale', '--smoke', '--results', tmp_path)
    md = (tmp_path/'collab_scale.md').read_text()
    assert md.strip() in out and re.search(r'^smoke epoch: \d+\.\d+ s$', md, re.M)
    assert 'EXTRAPOLATED' in md and '| stock |' in md and '| fast |' in md

def test_collab_quality_smoke(tmp_path):
    out = bench('collab_quality.py', '--smoke', '--results', tmp_path)
    md = (tmp_path/'collab_quality.md').read_text()
    assert md.count('picked by `pick_best`') == 2 and len(re.findall(r'\*\*(MSE|RMSE) \d\.\d{4} ± \d\.\d{4}\*\*', md)) == 2

def test_imports_smoke(tmp_path):
    out = bench('imports.py', '--repeat', '1', '--only', 'paddy_collab.core', '--results', tmp_path)
    assert '| `paddy_collab.core` |' in (tmp_path/'imports.md').read_text() and 'paddy_collab.core' in out

def test_committed_best_is_the_rules_pick():
    "`BEST` is what `pick_best` chose from the committed search on the lesson's training ratings"
    from paddy_collab.collab_best import BEST, CANDIDATES
    lesson = (RESULTS/'collab_quality.md').read_text().split('### u1')[0]  # the lesson protocol's search
    pick = re.search(r'picked by `pick_best`: \*\*(.+?)\*\*', lesson).group(1)
    assert CANDIDATES[pick] == BEST

RESULT_FILES = sorted(p.name for p in RESULTS.glob('*.md'))

def test_results_committed(): assert {'collab.md', 'collab_scale.md', 'collab_quality.md'} <= set(RESULT_FILES)

@pytest.mark.parametrize('name', RESULT_FILES)
def test_readme_shows_results(name):
    "README's results tables are the benchmarks' own output: `benchmarks/results/NAME`, pasted verbatim"
    table = (RESULTS/name).read_text().strip()
    assert table in (ROOT/'README.md').read_text(), f"README.md does not contain benchmarks/results/{name} verbatim: paste it into nbs/index.ipynb and run `make readme`"
