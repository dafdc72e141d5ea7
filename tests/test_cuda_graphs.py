"""The CUDA-graph branch of the training step, as far as a CPU reaches: the decision, the
sentence where graphs cannot be used, and that recording leaves training unchanged (the real
recording, torch.cuda.make_graphed_callables, is replaced by a recorder that counts; on a GPU
bench/gpu.sh checks the graphed step against the eager one)."""

import types

import pytest
import torch

from imclass.config import RunConfig, TrainConfig
from imclass.cuda_graphs import GraphedForward, decide
from imclass.data.batches import Batches
from imclass.run_setup import settle_cuda_graphs
from imclass.tasks import get_task
from imclass.training import fit

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_auto_takes_graphs_on_cuda_for_our_cnns_only():
    assert decide("auto", CUDA, "cnn", False, False)[0]
    assert decide("auto", CUDA, "rescnn", False, False)[0]
    used, why = decide("auto", CUDA, "efficientnet_lite0", False, False)
    assert not used and "arithmetic" in why
    assert decide("on", CUDA, "efficientnet_lite0", False, False)[0]  # asked for: recorded
    assert decide("off", CUDA, "cnn", False, False) == (False, "--cuda-graphs off")


@pytest.mark.parametrize("device, distributed, compile, reason", [
    (CPU, False, False, "need a CUDA device"), (CUDA, True, False, "several processes"),
    (CUDA, False, True, "--compile")])
def test_graphs_are_left_out_with_a_reason_where_they_cannot_work(device, distributed,
                                                                  compile, reason):
    for setting in ("auto", "on"):
        used, why = decide(setting, device, "cnn", distributed, compile)
        assert not used and reason in why


def test_an_impossible_on_is_said_and_skipped_not_a_crash():
    said = []
    setup = types.SimpleNamespace(cfg=RunConfig(train=TrainConfig(cuda_graphs="on")),
                                  device=CPU, dist=types.SimpleNamespace(active=False))
    info = {}
    assert settle_cuda_graphs(setup, info, said.append) is False
    assert setup.cfg.train.cuda_graphs == "off" and "CUDA device" in info["cuda_graphs"]
    assert said == ["--cuda-graphs on skipped: CUDA graphs need a CUDA device; this run "
                    "trains on cpu"]


class Recorder:
    """Stands in for torch.cuda.make_graphed_callables: notes the shape of each recording and
    returns the callable wrapped, counting the batches it is given (the replays)."""

    def __init__(self):
        self.shapes, self.replayed = [], []

    def __call__(self, module, sample_args):
        self.shapes.append(tuple(sample_args[0].shape))
        recorder = self

        class Replays(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.module = module

            def forward(self, x):
                recorder.replayed.append(tuple(x.shape))
                return self.module(x)
        return Replays()


def test_the_first_training_batch_is_recorded_and_other_calls_run_eagerly():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    recorder = Recorder()
    net = GraphedForward(model, recorder)
    net.train()
    net(torch.rand(8, 3, 2, 2))       # recorded, then replayed
    net(torch.rand(8, 3, 2, 2))       # the recorded shape: replayed
    net(torch.rand(5, 3, 2, 2))       # a last, smaller batch: eagerly
    net.eval()
    out = net(torch.rand(8, 3, 2, 2))  # evaluation: eagerly
    assert recorder.shapes == [(8, 3, 2, 2)] and out.shape == (8, 2)
    assert recorder.replayed == [(8, 3, 2, 2)] * 2
    assert list(net.parameters()) == list(model.parameters())  # the same weights train


def test_recording_changes_nothing_that_training_computes(monkeypatch):
    import sys
    sys.path.insert(0, "tests")
    from test_train_loop import tiny_problem

    recorder = Recorder()
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", recorder)

    def trained(graphs: str):
        torch.manual_seed(0)
        data, norm = tiny_problem()
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                    torch.nn.Flatten(), torch.nn.Dropout(0.2),
                                    torch.nn.Linear(144, 2))
        cfg = TrainConfig(epochs=2, lr=0.1, patience=None, cuda_graphs=graphs)
        loss = get_task("multiclass").loss(cfg.loss, cfg.label_smoothing)
        train = Batches(data, 24, norm, shuffle=True, seed=0, channels_last=False)
        fit(model, train, None, loss, cfg, CPU)
        return torch.cat([p.detach().flatten() for p in model.state_dict().values()
                          if p.is_floating_point()])

    plain = trained("off")
    assert recorder.shapes == []
    assert torch.equal(trained("on"), plain)
    assert recorder.shapes == [(24, 1, 8, 8)]  # once: the stage's first batch
