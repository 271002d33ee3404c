#!/usr/bin/env python
"""The wheels a GPU image lacks, for `benchmarks/gpu_check.py`: `make gpu-wheels` (`python benchmarks/gpu/wheels.py --dest .whl`).

The GPU machine's python has torch, torchvision, timm, accelerate, pandas and matplotlib (and what they need), and no
registry. This lists, from this venv's installed metadata, everything fastai, nbdev/execnb and paddy_collab need at
import time beyond that image, downloads those versions (`pip download --no-deps`, binary wheels for the target
python, pure-Python ones where they exist) and builds a paddy_collab wheel. Left out on purpose: spacy (only
`fastai.text` imports it), fastkaggle and the Kaggle client (only the Kaggle commands), and fastprogress 1.1's
python-fasthtml web stack (fastprogress 1.0.3, which fastai accepts, needs nothing but the standard library).

`--simulate DIR` builds a folder of symlinks to this venv's copies of the image's packages only (plus pip), to run
`python -S` against as if it were the GPU image (see tests/test_gpu_check.py).
"""
from __future__ import annotations
import argparse, importlib.metadata as md, json, os, re, subprocess, sys
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ['torch', 'torchvision', 'timm', 'accelerate', 'pandas', 'matplotlib']  # what the GPU image has
ROOTS = ['fastai', 'fastprogress', 'plum-dispatch', 'six', 'nbdev', 'execnb']  # what gpu_check.py and the notebooks import
SKIP = {'spacy', 'fastkaggle', 'kaggle', 'python-fasthtml', 'pip'}  # optional at import time (see the docstring)
PINS = {'fastprogress': '1.0.3'}  # instead of this venv's version: needs no web stack
EXTRA = ['setuptools']  # the image has one (torch needs it on 3.12), maybe >= 81 without the `pkg_resources` nbdev imports:
                        # this venv's (< 81) is shipped too, and gpu_check's bootstrap installs it if `pkg_resources` is missing

def closure(names, pyver:str, skip=frozenset())->dict:
    "{canonical name: installed version} of `names` and everything they require (markers read for python `pyver` on Linux)."
    env = dict(python_version=pyver, python_full_version=f'{pyver}.0', sys_platform='linux', platform_system='Linux', extra='',
               os_name='posix', platform_machine='x86_64', implementation_name='cpython', platform_python_implementation='CPython')
    seen, todo = {}, [canon(n) for n in names]
    while todo:
        n = todo.pop()
        if n in seen or n in skip: continue
        try: d = md.distribution(n)
        except md.PackageNotFoundError: continue  # not installed here: not needed by what is
        seen[n] = d.version
        for r in d.requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate(env): todo.append(canon(req.name))
    return seen

def needed(pyver:str)->dict:
    "{name: version} to download: the roots' closure, minus the image's, minus `SKIP`, with `PINS`."
    img = closure(IMAGE + ['pip'], pyver)
    need = {n: PINS.get(n, v) for n, v in closure(ROOTS, pyver, skip={canon(s) for s in SKIP}).items() if n not in img}
    need.update({n: md.version(n) for n in EXTRA})
    return dict(sorted(need.items()))

def download(need:dict, dest:Path, pyver:str):
    "pip download each wheel for `pyver` (binary only), falling back to building a wheel from the sdist."
    plat = ['--platform', 'manylinux2014_x86_64', '--platform', 'manylinux_2_17_x86_64', '--platform', 'manylinux_2_28_x86_64', '--platform', 'linux_x86_64']
    abi = ['--abi', 'cp' + pyver.replace('.', ''), '--abi', 'abi3', '--abi', 'none']  # that interpreter's compiled wheels, the stable ABI's, pure Python
    base = [sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '--dest', str(dest), '--python-version', pyver, '--implementation', 'cp', *abi, *plat, '--only-binary=:all:']
    specs = [f'{n}=={v}' for n, v in need.items()]
    if subprocess.run(base + specs).returncode == 0: return
    for s in specs:  # one at a time, so that one sdist-only package does not block the others
        if subprocess.run(base + [s]).returncode != 0:
            print(f'no binary wheel for {s}: building one', flush=True)
            subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--wheel-dir', str(dest), s], check=True)

def simulate(dest:Path, pyver:str)->Path:
    "A folder of symlinks to this venv's copies of the image's distributions (and pip): `python -S` with it on PYTHONPATH sees only those."
    dest.mkdir(parents=True, exist_ok=True)
    for n in closure(IMAGE + ['pip'], pyver):
        d = md.distribution(n)
        tops = {Path(str(f)).parts[0] for f in (d.files or []) if not str(f).startswith('..')}
        for t in tops:
            src, link = Path(d.locate_file(t)), dest/t
            if src.exists() and not link.exists() and t != '__pycache__' and not t.endswith('.pth'): link.symlink_to(src)
    return dest

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dest', default=str(ROOT/'.whl'))
    p.add_argument('--python-version', default='3.12')
    p.add_argument('--list', action='store_true', help='only print what would be downloaded')
    p.add_argument('--simulate', help='build the image-only symlink folder here instead')
    a = p.parse_args(argv)
    if a.simulate: print(simulate(Path(a.simulate), a.python_version)); return
    need = needed(a.python_version)
    print(f"{len(need)} distributions beyond the image ({', '.join(IMAGE)}): " + ' '.join(f'{n}=={v}' for n, v in need.items()), flush=True)
    if a.list: return
    dest = Path(a.dest); dest.mkdir(parents=True, exist_ok=True)
    for w in dest.glob('paddy_collab-*.whl'): w.unlink()
    download(need, dest, a.python_version)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '--wheel-dir', str(dest), str(ROOT)], check=True)
    ws = sorted(dest.glob('*.whl'))
    (dest/'wheels.json').write_text(json.dumps(dict(target=dict(python=a.python_version, implementation='cp', abi='cp' + a.python_version.replace('.', '')),
                                                    wheels=[w.name for w in ws]), indent=2))  # which interpreter these are for
    print(f"{len(ws)} wheels in {dest}, {sum(w.stat().st_size for w in ws)/2**20:.1f} MB", flush=True)

if __name__ == '__main__': main()
