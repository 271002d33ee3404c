"""paddy_collab.datasets end to end (the wheel and weights datasets; `hub.kernel_weights` in a fresh process): the real `kaggle` 2.x client against the local stand-in server (tests/kaggle_server.py).

Never contacts Kaggle: the `kenv` fixture sets KAGGLE_API_ENVIRONMENT=LOCALHOST, so every call goes to http://localhost/api/v1/...
"""
import json, os, subprocess, sys, zipfile
from pathlib import Path
import pytest

from kaggle_server import KaggleStandIn  # its fixtures come from conftest's `pytest_plugins`
import paddy_collab.datasets as pk
from paddy_collab.kaggle import KaggleError
from paddy_collab.datasets import push_wheel_dataset
from paddy_collab.hub import kernel_weights



# -- the wheel dataset

def test_push_wheel_dataset_carries_the_wheel_and_its_missing_dependencies(kenv, fast_wheel, find_links):
    res = push_wheel_dataset(slug='paddy-wheels-test', find_links=find_links)  # the wheel `build_wheel` built for this module
    ref = 'standin-user/paddy-wheels-test'
    assert res['ref'] == ref and res['created'] and res['url'].endswith(ref)
    req = kenv.ops('CreateDataset')[-1]['json']
    assert (req['ownerSlug'], req['slug'], req['title'], req['licenseName'], req['isPrivate']) == ('standin-user', 'paddy-wheels-test', 'paddy_collab wheels', 'apache-2.0', True)
    files = kenv.datasets[ref]
    assert sorted(files) == sorted(res['wheels'] + ['wheels.json']) and 'dataset-metadata.json' not in files
    info = json.loads(files['wheels.json'])
    assert {'fastkaggle', 'plum-dispatch', 'kaggle', 'kagglesdk'} <= set(info['carried']) and info['carried']['plum-dispatch'].startswith('plum_dispatch-2.')
    assert not {'fastcore', 'beartype', 'torch'} & set(info['carried'])  # the image holds them within our ranges
    assert info['target'] == pk.kaggle_target() and info['target']['python'] == pk.kaggle_python  # Kaggle's interpreter, recorded
    assert all(any(t in w for t in ('-py3-none-any', '-py2.py3-none-any', f"-{info['target']['abi']}-")) for w in info['carried'].values()), info['carried']
    assert not any(w.startswith(('torch', 'fastai-', 'timm')) for w in res['wheels'])  # the image has them
    import io
    names = zipfile.ZipFile(io.BytesIO(files[info['package']])).namelist()
    assert 'paddy_collab/kaggle.py' in names and 'paddy_collab/core.py' in names
    res2 = push_wheel_dataset(slug='paddy-wheels-test', notes='second', find_links=find_links)
    assert not res2['created'] and kenv.ops('CreateDatasetVersion')[-1]['json']['body']['versionNotes'] == 'second'


def test_push_wheel_dataset_extra_wheel_and_faults(kenv, tmp_path, fast_wheel, find_links):
    extra = tmp_path/'fastkaggle-0.0.9-py3-none-any.whl'
    with zipfile.ZipFile(extra, 'w') as z: z.writestr('fastkaggle/__init__.py', '# ours')
    res = push_wheel_dataset(slug='paddy-wheels-extra', extra_wheels=[extra], find_links=find_links)
    files = kenv.datasets['standin-user/paddy-wheels-extra']
    assert files[extra.name] == extra.read_bytes()  # the wheel given wins over the downloaded one
    kenv.fail('upload', 'close')
    with pytest.raises(KaggleError, match=r"Pushing dataset 'standin-user/paddy-wheels-f' \(.*paddy_collab-.*\.whl.*\) failed: the connection"):
        push_wheel_dataset(slug='paddy-wheels-f', find_links=find_links)
    kenv.fail('GetDatasetStatus', 500)
    with pytest.raises(KaggleError, match="Checking whether dataset 'standin-user/paddy-wheels-f' exists failed: HTTP 500"):
        push_wheel_dataset(slug='paddy-wheels-f', find_links=find_links)
    with pytest.raises(ValueError, match='6-50'): push_wheel_dataset(slug='abc')
    with pytest.raises(KaggleError, match="Downloading the wheel of '.*' failed.*find_links"): push_wheel_dataset(slug='paddy-wheels-g', find_links=tmp_path/'empty')


def test_weights_dataset_and_kernel_weights(kenv, tmp_path, monkeypatch):
    "Weights made locally in the HF cache layout, pushed, laid out as Kaggle attaches them, and loaded by timm with pretrained=True."
    import timm, torch, huggingface_hub.constants as hc
    from safetensors.torch import save_file
    hub = tmp_path/'hf'/'hub'
    r = hub/'models--timm--test_resnet.r160_in1k'
    (r/'refs').mkdir(parents=True); (r/'snapshots'/'abc').mkdir(parents=True); (r/'refs'/'main').write_text('abc')
    sd = timm.create_model('test_resnet', pretrained=False).state_dict()
    sd['fc.bias'] = torch.arange(len(sd['fc.bias']), dtype=torch.float32)  # recognisable
    save_file(sd, r/'snapshots'/'abc'/'model.safetensors')
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(hub))
    with pytest.raises(FileNotFoundError, match="'resnet18' are not in this machine's cache"): pk.push_weights_dataset(['resnet18'])
    res = pk.push_weights_dataset(['test_resnet'])
    assert res['ref'] == 'standin-user/paddy-collab-weights' and res['weights']['test_resnet']['hf_hub_id'] == 'timm/test_resnet.r160_in1k'
    inp = tmp_path/'input'/'paddy-collab-weights'; inp.mkdir(parents=True)
    for n, b in kenv.datasets[res['ref']].items(): (inp/n).write_bytes(b)
    # in the kernel: a fresh process, another (empty) HF cache, offline
    code = f"""import os, torch, timm
from paddy_collab.hub import kernel_weights
from paddy_collab.hub import pretrained_kwargs
assert kernel_weights({str(inp.parent)!r}, {str(tmp_path/'kcache')!r}) == {{'test_resnet': __import__('pathlib').Path({str(inp/'test-resnet.safetensors')!r})}}
m = timm.create_model('test_resnet', pretrained=True, **pretrained_kwargs('test_resnet'))
assert torch.equal(m.fc.bias, torch.arange(len(m.fc.bias), dtype=torch.float32)), 'not our weights'
print(os.environ['HF_HUB_OFFLINE'])"""
    env = {k: v for k, v in os.environ.items() if not k.startswith('HF_')} | {'HOME': str(tmp_path/'home')}
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and p.stdout.strip() == '1', p.stderr[-2000:]
    assert kernel_weights(tmp_path/'nothing') == {}
