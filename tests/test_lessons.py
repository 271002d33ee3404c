"The lesson path: notebooks listed in reading order, display cells with their outputs stored, and the Run All tool."
import ast, json, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
LESSONS = sorted(NBS.glob('[0-9]*.ipynb'))
REFERENCE = sorted((NBS/'ref').glob('[0-9]*.ipynb'))

_shows = re.compile(r'\.(show_batch|show_results|plot_loss|plot_confusion_matrix|plot_top_losses|plot_\w+)\(|\bplt\.\w+\(|\.plot\(|\bdisplay\(')
_skip = re.compile(r'^#\|\s*(eval:\s*false|hide\b|export)', re.M)  # exported cells define code: they display nothing
_frame_calls = ('head', 'tail', 'describe', 'sample', 'DataFrame', 'value_counts', 'to_frame', 'crosstab', 'pivot_table')

def _value_shown(src:str)->bool:
    "Is the cell's last statement an expression whose value Jupyter displays as a table or figure?"
    try: body = ast.parse(src).body
    except SyntaxError: return False  # IPython magics: not our concern here
    if not body or not isinstance(body[-1], ast.Expr): return False
    e = body[-1].value
    if isinstance(e, (ast.Name, ast.Subscript)): return True
    return isinstance(e, ast.Call) and isinstance(e.func, (ast.Attribute, ast.Name)) and \
        getattr(e.func, 'attr', getattr(e.func, 'id', None)) in _frame_calls

def display_cells_without_output(nb_path:Path)->list:
    "Indices of code cells that display something (a plot, a batch, a table as the cell's value) but keep no stored output."
    cells = json.loads(nb_path.read_text())['cells']
    res = []
    for i, c in enumerate(cells):
        if c['cell_type'] != 'code': continue
        src = ''.join(c['source'])
        if not src.strip() or _skip.search(src): continue
        if (_shows.search(src) or _value_shown(src)) and not c.get('outputs'): res.append(i)
    return res

def test_lessons_found(): assert len(LESSONS) >= 8 and len(REFERENCE) >= 5

@pytest.mark.parametrize('nb', LESSONS, ids=[p.stem for p in LESSONS])
def test_display_cells_keep_outputs(nb):
    "A student reading a lesson sees what each display cell shows: its output is stored (produced by really running it)."
    missing = display_cells_without_output(nb)
    assert not missing, f'{nb.name}: cells {missing} display something but have no stored output: run the notebook and save it'

def cell(src, outputs=()): return dict(cell_type='code', source=src, outputs=list(outputs), metadata={}, execution_count=None)

def _notebook(folder, cells)->Path:
    "A notebook file in `folder` holding `cells`, for the checks' own tests."
    (folder/'nb.ipynb').write_text(json.dumps(dict(cells=cells, metadata={}, nbformat=4, nbformat_minor=5)))
    return folder/'nb.ipynb'

def test_display_check_catches_missing_output(tmp_path):
    "The check above can fail: a plot, a `show_batch`, a DataFrame value without output are all caught; hidden cells are not."
    out = [dict(output_type='display_data', data={'text/plain': 'x'}, metadata={})]
    cells = [cell('dls.show_batch()'), cell('plt.bar(x, y)'), cell('df = load()\ndf.head()'), cell('df'), cell('#| hide\ndls.show_batch()'),
             cell('x = 1'), cell('test_eq(1, 1)'), cell('#| export\ndef plot_it(ax): ax.plot([1])'), cell('learn.show_results()', out), cell('print(1)')]
    assert display_cells_without_output(_notebook(tmp_path, cells)) == [0, 1, 2, 3]

_trains = {'train', 'seed_runs', 'train_ensemble', 'fit', 'fine_tune', 'fit_one_cycle', 'fit_flat_cos', 'fit_sgdr', 'lr_find'}

def hidden_training_cells(nb_path:Path)->list:
    "Indices of `#| hide` code cells that call a training function outside an `if os.environ.get('IN_TEST'):` block (nbdev's `test_nb` sets IN_TEST)."
    cells, res = json.loads(nb_path.read_text())['cells'], []
    for i, c in enumerate(cells):
        src = ''.join(c['source'])
        if c['cell_type'] != 'code' or not re.search(r'^#\|\s*hide\b', src, re.M): continue
        try: tree = ast.parse(src)
        except SyntaxError: continue  # IPython magics: not our concern here
        # guarded: under an `if` that tests IN_TEST; a `def`'s body trains only where it is called
        guarded = {id(m) for n in ast.walk(tree) if isinstance(n, ast.If) and 'IN_TEST' in ast.unparse(n.test) or isinstance(n, ast.FunctionDef)
                   for b in n.body for m in ast.walk(b)}
        calls = [n.func for n in ast.walk(tree) if isinstance(n, ast.Call) and id(n) not in guarded]
        if any(getattr(f, 'attr', getattr(f, 'id', None)) in _trains for f in calls): res.append(i)
    return res

@pytest.mark.parametrize('nb', LESSONS, ids=[p.stem for p in LESSONS])
def test_hidden_cells_train_only_under_nbdev_test(nb):
    "A student's Run All trains only the lesson's models: a hidden test twin that trains runs only under `nbdev_test` (IN_TEST set)."
    bad = hidden_training_cells(nb)
    assert not bad, f"{nb.name}: hidden cells {bad} train a model in a student's Run All: put their code under `if os.environ.get('IN_TEST'):`"

def test_hidden_training_check_can_fail(tmp_path):
    "The check above catches bare, method and nested training calls in hidden cells, and passes guarded ones and shown cells."
    cells = [cell("#| hide\np = train('test_resnet', 32, path=tiny)"), cell("#| hide\nlearn.fit_one_cycle(1)"),
             cell("#| hide\nfor s in (1, 2): runs = [seed_runs(cfgs, path, seeds=(s,))]"), cell("#| hide\nx = 1\nif os.environ.get('IN_TEST'):\n    p = train('a', 32)"),
             cell("p = train('a', 32)"), cell("#| hide\ntest_eq(seed_table(r).loc['a', 'mean'], 0.11)"), cell("#| hide\ndef twin(): return learn.fit(1)"), dict(cell_type='markdown', source='#| hide train()', metadata={})]
    assert hidden_training_cells(_notebook(tmp_path, cells)) == [0, 1, 2]

def test_index_lists_lessons_in_reading_order_then_reference():
    "index.ipynb (so README) gives the learning path first, in the notebooks' order, then the reference notebooks."
    readme = (ROOT/'README.md').read_text()
    pos = [readme.find(f'`{p.relative_to(NBS).as_posix()}`') for p in LESSONS + REFERENCE]
    missing = [p.relative_to(NBS).as_posix() for p, i in zip(LESSONS + REFERENCE, pos) if i < 0]
    assert not missing, f'README does not list {missing}'
    assert pos == sorted(pos), 'README must list the lesson notebooks in reading order, then the reference notebooks'
    assert readme.find('make test') > pos[0], 'the learning path comes before the two commands'

def test_run_lessons_reports_time_memory_and_failures(tmp_path):
    "`make run-lessons`' tool runs every cell (flagged ones too), measures the kernel's memory, and fails loudly."
    def nb(*srcs): return json.dumps(dict(cells=[dict(cell_type='code', source=s, outputs=[], metadata={}, execution_count=None) for s in srcs],
                                          metadata=dict(kernelspec=dict(name='python3', display_name='Python 3', language='python')),
                                          nbformat=4, nbformat_minor=5))
    (tmp_path/'a_ok.ipynb').write_text(nb('#| slow\nimport numpy as np\nx = np.ones(300*2**20//8)\nx.sum()', 'y = 1'))
    (tmp_path/'b_bad.ipynb').write_text(nb('raise ValueError("boom")'))
    r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'run_lessons.py'), str(tmp_path/'a_ok.ipynb'), str(tmp_path/'b_bad.ipynb'),
                        '--save', str(tmp_path/'out')], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    ok = next(l for l in r.stdout.splitlines() if l.startswith('a_ok.ipynb')).split()
    assert ok[1] == 'ok' and float(ok[3]) > 300, ok  # the flagged cell ran: its 300 MB array is in the peak
    bad = next(l for l in r.stdout.splitlines() if l.startswith('b_bad.ipynb'))
    assert 'FAILED' in bad and 'boom' in bad, bad
    saved = json.loads((tmp_path/'out'/'a_ok.ipynb').read_text())
    assert saved['cells'][0]['outputs'], 'executed notebooks are saved with their outputs'
