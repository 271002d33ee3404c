"Run every notebook's tests through nbdev's own `test_nb`, one pytest case per notebook."
import os
from pathlib import Path
import pytest
from nbdev.config import get_config
from nbdev.test import test_nb as run_nb  # aliased: pytest would collect a name starting with `test`

NBS = Path(__file__).resolve().parents[1]/'nbs'
notebooks = sorted(p for p in NBS.rglob('*.ipynb') if not p.name.startswith('_') and '.ipynb_checkpoints' not in p.parts)

@pytest.mark.parametrize('nb', notebooks, ids=[str(p.relative_to(NBS).with_suffix('')) for p in notebooks])
def test_notebook(nb):
    "Cells flagged with `tst_flags` (settings.ini) are skipped unless named in $PADDY_TEST_FLAGS."
    skip = get_config().tst_flags.split()
    force = os.environ.get('PADDY_TEST_FLAGS', '').split()
    ok, secs = run_nb(nb, skip_flags=skip, force_flags=force, showerr=True)
    print(f'{nb.name}: {secs:.1f}s')
    assert ok, f'{nb.name} failed; the traceback is above'

def test_notebooks_found(): assert len(notebooks) >= 3
