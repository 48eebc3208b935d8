"""bps.models.networks beyond LeNet-5: the small CNN, ResNet-18/50 for N channels, local pretrained weights.

LeNet-5 itself and the weights-only checkpoint format are covered by test_models.py.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from benchmarks.bench_pooling import with_torch_pooling
from bps.core.errors import PipelineError
from bps.core.params import ParamsError, parse_params
from bps.models.card import ModelCard
from bps.models.networks import (
    ARCHITECTURES,
    LeNet5,
    MaxPool2x2,
    PooledLeNet,
    SmallCNN,
    adapt_first_conv,
    build_model,
    load_checkpoint,
    resnet,
    save_checkpoint,
)
from tests.support.model_cards import finished_card


def _config(architecture: str, in_channels: int = 1, size: int = 32, n_classes: int = 2) -> ModelCard:
    """A model card shaped like the one stages/train_lenet.py writes."""
    return finished_card(architecture, in_channels, size, [f"class {i}" for i in range(n_classes)])


@torch.no_grad()
def _logits(model: nn.Module, in_channels: int, size: int, count: int = 2) -> torch.Tensor:
    x = torch.rand(count, in_channels, size, size, generator=torch.Generator().manual_seed(0))
    return model.eval()(x)


def _conv1_key(architecture: str) -> str:
    return "features.0.weight" if architecture in ("lenet", "lenet_pool", "lenet_pool_s2", "cnn") else "conv1.weight"


# --- output shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("in_channels", [1, 4, 6])
@pytest.mark.parametrize("architecture", ["lenet_pool", "cnn", "resnet18"])
def test_output_shape(architecture, in_channels, size):
    n_classes = in_channels + 1  # 2, 5 and 7 classes
    torch.manual_seed(0)
    model = ARCHITECTURES[architecture](in_channels, n_classes, size)
    out = _logits(model, in_channels, size, count=3)
    assert out.shape == (3, n_classes)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    with pytest.raises(RuntimeError):  # the first layer really expects in_channels
        _logits(model, in_channels + 1, size)


def test_small_cnn_is_deeper_than_lenet():
    model = SmallCNN(1, 2, 32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 4


def _spot_at(row: int, col: int, size: int = 64) -> torch.Tensor:
    image = torch.zeros(1, 1, size, size)
    image[0, 0, row - 1:row + 2, col - 1:col + 2] = 1.0
    return image


@pytest.mark.parametrize("shape", [(4, 6, 60, 60), (3, 2, 7, 9), (2, 16, 26, 26)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_2x2_gives_max_pool2d_s_values_and_gradients(shape, ties):
    """Bit for bit, with and without autograd, ties (ReLU's zeros) and odd sides included."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator)
    if ties:
        x = torch.relu(torch.round(x * 2) / 2)
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(x), nn.MaxPool2d(2)(x))
        assert torch.equal(MaxPool2x2()(x.to(memory_format=torch.channels_last)), nn.MaxPool2d(2)(x))
    ours, torchs = x.clone().requires_grad_(), x.clone().requires_grad_()
    pooled, expected = MaxPool2x2()(ours), nn.MaxPool2d(2)(torchs)
    grad = torch.randn(expected.shape, generator=generator)
    pooled.backward(grad)
    expected.backward(grad)
    assert torch.equal(pooled, expected)
    assert torch.equal(ours.grad, torchs.grad)


@pytest.mark.parametrize("architecture", [PooledLeNet, LeNet5, SmallCNN])
def test_networks_predict_as_with_torch_s_max_pooling(architecture):
    """Images with flat, clamped patches (positive ties) get the same logits, bit for bit."""
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(1)).clamp(0.3, 0.7)
    ours = architecture(1, 2, 32).eval()
    torchs = with_torch_pooling(architecture(1, 2, 32)).eval()
    torchs.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert torch.equal(ours(images), torchs(images))


@torch.no_grad()
def test_pooled_lenet_reads_a_spot_the_same_wherever_it_sits():
    """Moved by an even number of pixels (the pooling stride), a spot gives the same answer; LeNet-5's
    first linear layer weighs each position on its own, so it does not."""
    torch.manual_seed(0)
    pooled, lenet = PooledLeNet(1, 2, 64).eval(), LeNet5(1, 2, 64).eval()
    here, there = _spot_at(20, 20), _spot_at(36, 42)
    torch.testing.assert_close(pooled(here), pooled(there))
    assert not torch.allclose(lenet(here), lenet(there))
    assert not torch.allclose(pooled(here), pooled(torch.zeros(1, 1, 64, 64)))  # yet it sees the spot


def test_pooled_lenet_needs_room_for_its_convolutions():
    with pytest.raises(ValueError, match="at least 16"):
        PooledLeNet(1, 2, 12)
    with pytest.raises(ValueError, match="at least 32"):
        PooledLeNet(1, 2, 24, stride=2)


@torch.no_grad()
def test_the_strided_pooled_lenet_reads_twice_the_side_through_maps_of_about_the_same_size():
    """At 128 px with stride 2 its maps are about those of 64 px at stride 1: about the same cost per image."""
    strided = build_model(_config("lenet_pool_s2", 1, 128, 2))
    assert strided.features[0].stride == (2, 2)
    assert strided.features(torch.zeros(1, 1, 128, 128)).shape == (1, 16, 27, 27)
    assert PooledLeNet(1, 2, 64).features(torch.zeros(1, 1, 64, 64)).shape == (1, 16, 26, 26)


def test_resnet_first_conv_and_head_fit_the_data():
    model = resnet(18, 6, 7, 64)
    assert model.conv1.in_channels == 6
    assert model.conv1.out_channels == 64
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2) and model.conv1.padding == (3, 3)
    assert model.conv1.bias is None
    assert model.fc.out_features == 7
    assert model.fc.in_features == 512


# --- adapt_first_conv ------------------------------------------------------------------------


def _rgb_conv(bias: bool = True) -> nn.Conv2d:
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 8, kernel_size=5, stride=2, padding=2, bias=bias)
    with torch.no_grad():  # make the three input filters clearly different
        conv.weight[:, 1] *= 3.0
        conv.weight[:, 2] -= 0.2
    return conv


@pytest.mark.parametrize("in_channels", [1, 4, 6])
@pytest.mark.parametrize("bias", [True, False])
def test_adapt_first_conv_keeps_the_layer(in_channels, bias):
    conv = _rgb_conv(bias)
    adapted = adapt_first_conv(conv, in_channels)
    assert adapted.in_channels == in_channels
    assert adapted.weight.shape == (8, in_channels, 5, 5)
    assert (adapted.out_channels, adapted.kernel_size, adapted.stride, adapted.padding) == (
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
    )
    assert (adapted.bias is None) == (not bias)
    if bias:
        assert torch.equal(adapted.bias, conv.bias)
    # Each new input channel carries the RGB filters' mean, scaled by 3/N.
    expected = conv.weight.mean(dim=1, keepdim=True) * 3 / in_channels
    for channel in range(in_channels):
        torch.testing.assert_close(adapted.weight[:, channel : channel + 1], expected)


@torch.no_grad()
def test_adapt_first_conv_grey_image_gets_the_rgb_response():
    conv = _rgb_conv()
    grey = torch.rand(4, 1, 17, 17, generator=torch.Generator().manual_seed(1))
    expected = conv(grey.repeat(1, 3, 1, 1))
    torch.testing.assert_close(adapt_first_conv(conv, 1)(grey), expected, rtol=1e-5, atol=1e-5)
    # The check sees a wrong scale: the plain mean (no ×3) gives a third of the response's weight part.
    unscaled = nn.functional.conv2d(grey, conv.weight.mean(dim=1, keepdim=True), conv.bias, conv.stride, conv.padding)
    assert not torch.allclose(unscaled, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("in_channels", [4, 6])
@torch.no_grad()
def test_adapt_first_conv_n_equal_channels_get_the_rgb_response(in_channels):
    # N channels of the same brightness respond as an RGB image of that brightness did.
    conv = _rgb_conv()
    grey = torch.rand(4, 1, 17, 17, generator=torch.Generator().manual_seed(2))
    adapted = adapt_first_conv(conv, in_channels)
    torch.testing.assert_close(
        adapted(grey.repeat(1, in_channels, 1, 1)), conv(grey.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5
    )
    assert adapted(torch.rand(2, in_channels, 17, 17)).shape == (2, 8, 9, 9)


# --- pretrained weights: local files only ----------------------------------------------------


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory) -> tuple:
    """A torchvision ResNet-18 state dict saved to a local file (random weights: nothing downloaded)."""
    torch.manual_seed(11)
    state = torchvision.models.resnet18(weights=None).state_dict()
    with torch.no_grad():  # running stats that differ from a fresh model's defaults
        state["bn1.running_mean"].uniform_(-1, 1)
        state["bn1.running_var"].uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pt"
    torch.save(state, path)
    return path, state


def test_missing_pretrained_file_is_a_pipeline_error_that_never_downloads(tmp_path):
    missing = tmp_path / "nowhere" / "resnet18.pth"
    with pytest.raises(PipelineError, match="never downloaded") as caught:
        resnet(18, 1, 2, 32, pretrained=missing)
    assert str(missing) in str(caught.value)
    assert "train.pretrained" in str(caught.value)
    with pytest.raises(PipelineError, match="never downloaded"):
        build_model(_config("resnet18"), pretrained=missing)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_pretrained_weights_load_with_an_averaged_first_conv(imagenet_like, in_channels):
    path, saved = imagenet_like
    torch.manual_seed(99)  # another seed than the saved weights': a fresh model would differ
    model = build_model(_config("resnet18", in_channels=in_channels, n_classes=3), pretrained=path)
    state = model.state_dict()

    mean = saved["conv1.weight"].mean(dim=1, keepdim=True)
    assert state["conv1.weight"].shape == (64, in_channels, 7, 7)
    for channel in range(in_channels):
        torch.testing.assert_close(state["conv1.weight"][:, channel : channel + 1], mean * 3 / in_channels)
    if in_channels == 3:  # three channels: exactly the channel mean, in every channel
        torch.testing.assert_close(state["conv1.weight"], mean.expand(-1, 3, -1, -1))
    for name, tensor in saved.items():
        if not name.startswith(("conv1.", "fc.")):
            assert torch.equal(state[name], tensor), name
    assert model.fc.out_features == 3  # a new head, not ImageNet's 1000 classes
    assert _logits(model, in_channels, 32).shape == (2, 3)

    if in_channels == 1:  # the check can tell: without the file, the same seed gives other weights
        torch.manual_seed(99)
        fresh = build_model(_config("resnet18", in_channels=in_channels, n_classes=3))
        assert not torch.equal(fresh.state_dict()["layer1.0.conv1.weight"], saved["layer1.0.conv1.weight"])


def test_pretrained_weights_of_another_depth_are_one_line_naming_the_file(imagenet_like):
    path, _ = imagenet_like
    with pytest.raises(PipelineError) as caught:
        resnet(50, 1, 2, 32, pretrained=path)
    message = str(caught.value)
    assert message.startswith(f"train.pretrained: {path} does not fit")
    assert "missing key(s)" in message and "\n" not in message


def test_pretrained_file_that_is_not_weights_is_one_line_naming_the_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("these are my notes, not weights\n")
    with pytest.raises(PipelineError) as caught:
        resnet(18, 1, 2, 32, pretrained=notes)
    message = str(caught.value)
    assert message.startswith(f"train.pretrained: {notes} is not a weights file")
    assert "\n" not in message


def test_pretrained_state_dict_with_other_keys_is_one_line_naming_the_file(tmp_path):
    other = tmp_path / "lenet.pt"
    torch.save(LeNet5(1, 2, 32).state_dict(), other)
    with pytest.raises(PipelineError) as caught:
        resnet(18, 1, 2, 32, pretrained=other)
    message = str(caught.value)
    assert message.startswith(f"train.pretrained: {other} does not fit")
    assert "unexpected key(s), e.g. 'classifier." in message and "\n" not in message


# --- build_model and checkpoints -------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "cls", "in_channels", "size", "n_classes"),
    [
        ("lenet", LeNet5, 1, 32, 2),
        ("lenet_pool", PooledLeNet, 1, 32, 2),
        ("lenet_pool_s2", PooledLeNet, 1, 64, 2),
        ("cnn", SmallCNN, 4, 64, 5),
        ("resnet18", torchvision.models.ResNet, 1, 32, 6),
        ("resnet50", torchvision.models.ResNet, 6, 32, 3),  # the one ResNet-50: it is big
    ],
)
def test_build_model_from_a_checkpoint_config(architecture, cls, in_channels, size, n_classes):
    model = build_model(_config(architecture, in_channels, size, n_classes))
    assert type(model) is cls
    assert model.state_dict()[_conv1_key(architecture)].shape[1] == in_channels
    assert _logits(model, in_channels, size).shape == (2, n_classes)
    if architecture == "resnet50":
        assert model.fc.in_features == 2048


@pytest.mark.parametrize(("architecture", "in_channels", "size"), [("cnn", 4, 32), ("resnet18", 1, 32)])
def test_checkpoint_round_trip(tmp_path, architecture, in_channels, size):
    torch.manual_seed(5)
    config = _config(architecture, in_channels, size, n_classes=3)
    model = build_model(config)
    model.train()
    with torch.no_grad():  # move BatchNorm's running statistics off their defaults
        model(torch.rand(4, in_channels, size, size))
    model.eval()
    save_checkpoint(tmp_path / "model", model, config)

    loaded, loaded_config = load_checkpoint(tmp_path / "model")
    assert loaded_config == config
    assert type(loaded) is type(model)
    assert not loaded.training
    saved_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert set(saved_state) == set(loaded_state)
    assert any("running_mean" in name for name in saved_state)
    for name, tensor in saved_state.items():
        assert torch.equal(loaded_state[name], tensor), name
    torch.testing.assert_close(_logits(loaded, in_channels, size, 4), _logits(model, in_channels, size, 4))


# --- params ----------------------------------------------------------------------------------


def _params_error(raw: dict) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    return str(caught.value)


@pytest.mark.parametrize("model", ["lenet", "cnn"])
def test_pretrained_needs_a_resnet(model):
    message = _params_error({"train": {"model": model, "pretrained": "weights/resnet18.pth"}})
    assert "train:" in message
    assert "pretrained" in message
    assert model in message
    assert "resnet18" in message
    assert len(message.splitlines()) == 1


@pytest.mark.parametrize("model", ["resnet18", "resnet50"])
def test_pretrained_with_a_resnet_validates(model):
    train = parse_params({"train": {"model": model, "pretrained": "weights/r.pth"}}).train
    assert (train.model, train.pretrained) == (model, "weights/r.pth")
    assert parse_params({"train": {"model": "lenet", "pretrained": None}}).train.pretrained is None


def test_unknown_model_names_the_allowed_values():
    message = _params_error({"train": {"model": "vgg16"}})
    assert "train.model" in message
    assert "'vgg16'" in message
    for name in ARCHITECTURES:
        assert f"'{name}'" in message


@pytest.mark.slow  # a fresh interpreter: seconds
def test_the_cnn_stage_starts_without_torchvision():
    """Only the ResNets need torchvision, whose import (torch._dynamo with it) is seconds of every start."""
    code = "import sys, stages.train_lenet; print('torchvision' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "False"
