"""The Paddy lessons' claims, kept alive in CI on a small synthetic set (600 images of the lesson's CPU size, 96x128).

The lessons measure them at full CPU scale over seeds (04-06, `benchmarks/paddy_synth.py`); these twins fail if a change breaks
them: the ImageNet weights stop loading (or load into the wrong places), the synthetic set becomes solvable by colour, or the
lesson's CPU configuration stops learning."""
import time
import pytest
from paddy_collab.paddy_data import paddy_dls
from paddy_collab.train import train, lesson_cfg, majority_error, linear_error, colour_histogram, tiny_pixels

pytestmark = pytest.mark.paddy('claims')  # conftest's PADDY_SIZES['claims']: 600 training images of 96x128

@pytest.fixture(scope='module')
def dls(paddy): return paddy_dls(paddy, size=32, bs=8, check=False)  # the lesson's split (seed 42): 480 training, 120 validation images

@pytest.fixture(scope='module')
def errors(paddy):
    "Validation disease error of the lesson's CPU configuration, from the ImageNet weights and from random ones (its 4 epochs each)."
    kw = lesson_cfg('cpu') | dict(n_tta=0, show=False, check=False)
    t = time.time()
    res = {name: train(path=paddy, **(kw | dict(pretrained=pre))).meta['valid']['error_rate'] for name, pre in [('pretrained', True), ('scratch', False)]}
    print(f"disease error: {res} ({time.time()-t:.0f}s)")
    return res

def test_shape_blind_baselines_fail(dls):
    "Colour alone, or a 16x16 thumbnail, must not solve the set (measured on this split: see the printed line)."
    maj, hist, pix = majority_error(dls), linear_error(dls, colour_histogram), linear_error(dls, tiny_pixels)
    print(f"majority {maj:.3f}, colour histogram {hist:.3f}, 16x16 pixels {pix:.3f}")
    assert maj >= 0.75 and hist >= 0.5 and pix >= 0.5, (maj, hist, pix)  # measured 0.817, 0.733, 0.717

def test_pretrained_beats_scratch(errors):
    "The lesson's first finding: the same architecture, budget and data, only the starting weights differ."
    # measured: pretrained 0.283, scratch 0.717 (120 validation images: one standard error is about 0.04); equal weights fail it
    assert errors['pretrained'] <= errors['scratch'] - 0.25, errors

def test_pretrained_beats_the_baselines(errors, dls):
    "The fine-tuned model clears the best shape-blind baseline by far."
    # measured: 0.283 against 0.717 (16x16 pixels) and 0.733 (colour histogram); the model from scratch (0.717) fails it
    assert errors['pretrained'] <= min(linear_error(dls, colour_histogram), linear_error(dls, tiny_pixels)) - 0.2, errors
