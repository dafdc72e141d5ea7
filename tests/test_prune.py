"""`imclass prune`: magnitude pruning (zeros kept through fine-tuning) and structured channel
pruning (narrower layers that load back, export and predict), each as a new run folder with
its own metrics and report, on Fashion-MNIST and on a folder dataset."""
import json
import os
import signal

import numpy as np
import pytest
import torch
from torch import nn

from imagedata import folder_dataset
from imclass import cli
from imclass.config import ModelConfig
from imclass.errors import DataError
from imclass.models import build_model, count_parameters, flops_per_image
from imclass.models.resize import fit_to_state
from imclass.pruning import KeepZeros, remove_channels, sparsity, zero_smallest
from imclass.runfolder import load_run


def fresh(name: str = "cnn", channels: int = 1):
    architecture = "tf_efficientnet_lite0" if name == "efficientnet_lite0" else None
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name), channels, 4, architecture).eval()


@pytest.mark.parametrize("name, shape", [("cnn", (1, 28, 28)), ("rescnn", (1, 28, 28)),
                                         ("efficientnet_lite0", (3, 64, 64))])
def test_a_narrowed_model_is_rebuilt_from_its_weights_alone(name, shape):
    """Depthwise convolutions (EfficientNet), residual sums (rescnn: a block's input and output
    lose the same channels) and our CNNs' head width follow the shapes."""
    model = fresh(name, shape[0])
    remove_channels(model, 0.4, shape)
    assert count_parameters(model) < 0.7 * count_parameters(fresh(name, shape[0]))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rebuilt = fresh(name, shape[0])
    assert fit_to_state(rebuilt, state) > 0
    rebuilt.load_state_dict(state)
    x = torch.randn(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), model.eval()(x))
    assert flops_per_image(rebuilt, shape) == flops_per_image(model, shape)
    if name in ("cnn", "rescnn"):
        assert rebuilt.num_features == rebuilt.head.in_features == rebuilt.embed(x).shape[1]


def test_a_layer_imclass_cannot_resize_is_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    state = {k: v for k, v in model.state_dict().items()}
    state["1.weight"], state["1.bias"] = torch.ones(2), torch.zeros(2)
    with pytest.raises(DataError, match="layer 1 \\(LayerNorm\\)"):
        fit_to_state(model, state)


def test_magnitude_pruning_zeroes_the_smallest_weights_and_keepzeros_holds_them():
    model = fresh()
    masks = zero_smallest(model, 0.6)
    assert sparsity(model) == pytest.approx(0.6, abs=1e-3)
    weights = torch.cat([m.weight.flatten() for m in model.modules()
                         if isinstance(m, (nn.Conv2d, nn.Linear))])
    smallest_kept = weights[weights != 0].abs().min()
    assert smallest_kept > 0 and set(masks) >= {"head.weight", "features.0.weight"}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    keep = KeepZeros(model, masks)
    keep("epoch_start", {})
    x, y = torch.randn(8, 1, 28, 28), torch.arange(8) % 4
    for step in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model.train()(x), y).backward()
        optimizer.step()
        if step == 0:
            assert sparsity(model) < 0.5  # the step revived them: the mask is needed
        keep("batch_end", {})
        assert sparsity(model) >= 0.6 - 1e-3


@pytest.fixture(scope="module")
def pruned_pair(trained_run, tmp_path_factory):
    """The shared Fashion-MNIST run, pruned both ways with one fine-tuning epoch each."""
    root = tmp_path_factory.mktemp("pruned")
    outs = {}
    for how, flags in (("sparse", []), ("slim", ["--structured"])):
        outs[how] = root / how
        assert cli.main(["prune", str(trained_run), "--amount", "0.5", "--fine-tune-epochs",
                         "1", "--out", str(outs[how]), "--quiet", *flags]) == 0
    return outs


@pytest.mark.slow
def test_unstructured_pruning_keeps_its_zeros_through_fine_tuning(trained_run, pruned_pair):
    out = pruned_pair["sparse"]
    run = json.loads((out / "run.json").read_text())
    assert run["pruned"]["method"] == "unstructured" and run["epochs_run"] == 1
    assert run["pruned"]["source"] == str(trained_run)
    assert sparsity(load_run(out).model) >= 0.5 - 1e-3  # after the optimiser moved them
    assert load_run(out).model.state_dict().keys() == load_run(trained_run).model.state_dict().keys()
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["accuracy"] > 0.5  # 10 classes: the fine-tuned model is far from chance
    report = (out / "report.html").read_text()
    assert "Pruned from" in report and "unstructured" in report
    assert json.loads((out / "prune.json").read_text())["amount"] == 0.5


@pytest.mark.slow
def test_structured_pruning_gives_a_smaller_model_that_exports_and_predicts(
        trained_run, pruned_pair, tmp_path):
    out = pruned_pair["slim"]
    run = json.loads((out / "run.json").read_text())
    before, after = run["pruned"]["before"], run["pruned"]["after"]
    assert after["parameters"] < 0.4 * before["parameters"]
    assert after["flops_per_image"] < 0.4 * before["flops_per_image"]
    assert run["model"]["parameters"] == after["parameters"] == count_parameters(
        load_run(out).model)
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] > 0.5
    assert cli.main(["export", str(out), "--out", str(tmp_path / "slim.onnx")]) == 0
    import imclass
    images = np.random.default_rng(0).integers(0, 256, (16, 1, 28, 28), dtype=np.uint8)
    by_torch = imclass.load(out).probabilities(images)
    by_onnx = imclass.load(tmp_path / "slim.onnx").probabilities(images)
    np.testing.assert_allclose(by_onnx, by_torch, atol=1e-4)
    assert cli.main(["prune", str(out), "--structured", "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_a_stopped_prune_run_resumes_by_pruning_again(trained_run, tmp_path):
    """Ctrl-C after the first fine-tuning epoch, then --resume: the same run as unbroken."""
    from imclass.api import resume_run, train
    from imclass.pruning import PruneSpec, fine_tune_config

    spec = PruneSpec(str(trained_run), 0.5, True)
    cfg = fine_tune_config(trained_run, 2, None)
    whole = train(cfg, tmp_path / "whole", quiet=True, prune=spec, evaluate_test=False)

    def interrupt(event, info):
        if event == "epoch_end" and info["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGINT)
    cut = train(cfg, tmp_path / "cut", quiet=True, prune=spec, callbacks=[interrupt],
                evaluate_test=False)
    assert json.loads((cut / "run.json").read_text())["stopped"]["epoch"] == 2
    resume_run(cut, quiet=True)
    a, b = load_run(whole).model.state_dict(), load_run(cut).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_prune_on_a_folder_dataset(tmp_path, capsys):
    data = folder_dataset(tmp_path / "pets", n_train=20, n_test=6)
    base = tmp_path / "run"
    assert cli.main(["train", "--data", str(data), "--out", str(base), "--model", "cnn",
                     "--epochs", "4", "--batch-size", "16", "--lr", "0.05", "--quiet",
                     "--cache-dir", str(tmp_path / "cache")]) == 0
    assert cli.main(["prune", str(base), "--structured", "--amount", "0.3", "--quiet"]) == 0
    out = tmp_path / "run-pruned30-structured"  # the default name, beside the trained run
    assert capsys.readouterr().out.strip().endswith(str(out / "report.html"))
    run = json.loads((out / "run.json").read_text())
    assert run["epochs_run"] == 3  # 30% of 4 epochs is less than the 3 it always gets
    assert run["data"] == json.loads((base / "run.json").read_text())["data"]  # same split
    assert (out / "analysis.json").is_file() and (out / "report.html").is_file()


@pytest.mark.slow
def test_a_pretrained_run_is_pruned_as_it_was_built_and_the_recipe_line_says_so(tmp_path,
                                                                               capsys):
    data = folder_dataset(tmp_path / "pets", n_train=40, n_test=6)
    base = tmp_path / "run"  # the recipe: the Lite0 package, a tf_efficientnet_lite0
    assert cli.main(["train", "--data", str(data), "--out", str(base), "--epochs", "3",
                     "--quiet", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert cli.main(["prune", str(base), "--amount", "0.3", "--fine-tune-epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert f"recipe for fine-tuning the run {base}: efficientnet_lite0 from its weights" in err
    assert "--recipe none" not in err
    trained = json.loads((base / "run.json").read_text())
    pruned = json.loads((tmp_path / "run-pruned30" / "run.json").read_text())
    assert pruned["model"]["architecture"] == trained["model"]["architecture"]
    # before any weight is removed the model is the trained one: its validation accuracy too
    # (rebuilt with PyTorch padding and ImageNet statistics it had 0.67 for the run's 1.0)
    assert pruned["pruned"]["before"]["val_acc"] == pytest.approx(
        trained["validation"]["val_acc"], abs=0.05)


def test_prune_refuses_in_one_line(tmp_path, capsys):
    cases = [(["prune", str(tmp_path)], "no finished run"),
             (["prune", str(tmp_path), "--amount", "1.5"], "between 0 and 1"),
             (["prune", str(tmp_path), "--fine-tune-epochs", "0"], "at least 1")]
    for args, message in cases:
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
