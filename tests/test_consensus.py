"""TSN's segmental consensus functions and how TSN folds segments and snippets."""
import pytest
import torch

from models import build_model
from models.tsn import CONSENSUS

B, K, N = 2, 3, 4
# (B, K, N) segment scores with known per-class mean and max.
SCORES = torch.tensor([[[1.0, 0.0, 3.0, -1.0],
                        [2.0, 6.0, 0.0, -2.0],
                        [3.0, 0.0, 0.0, -3.0]],
                       [[0.0, 0.0, 0.0, 0.0],
                        [0.0, 0.0, 9.0, 0.0],
                        [-3.0, 3.0, 0.0, 0.0]]])


@pytest.mark.parametrize("name", sorted(CONSENSUS))
def test_consensus_reduces_segments(name):
    consensus = CONSENSUS[name](K, N)
    out = consensus(SCORES)
    assert out.shape == (B, N)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name,expected", [
    ("avg", [[2.0, 2.0, 1.0, -2.0], [-1.0, 1.0, 3.0, 0.0]]),
    ("max", [[3.0, 6.0, 3.0, -1.0], [0.0, 3.0, 9.0, 0.0]]),
    # both learned consensuses start as the average: the weights are 1/K, the attention is uniform
    ("weighted", [[2.0, 2.0, 1.0, -2.0], [-1.0, 1.0, 3.0, 0.0]]),
    ("learnable", [[2.0, 2.0, 1.0, -2.0], [-1.0, 1.0, 3.0, 0.0]]),
])
def test_consensus_values(name, expected):
    out = CONSENSUS[name](K, N)(SCORES)
    torch.testing.assert_close(out, torch.tensor(expected))


def test_learnable_consensus_weights_depend_on_content():
    torch.manual_seed(0)
    consensus = CONSENSUS["learnable"](K, N)
    torch.nn.init.normal_(consensus.score.weight)  # away from the uniform initialisation
    out = consensus(SCORES)
    # The output is a convex combination of the segments: between their min and max per class ...
    assert (out >= SCORES.amin(1) - 1e-6).all() and (out <= SCORES.amax(1) + 1e-6).all()
    # ... and no longer the plain mean.
    assert not torch.allclose(out, SCORES.mean(1))


def test_tsn_avg_is_invariant_to_segment_order():
    torch.manual_seed(0)
    L = 2  # rgbdiff snippets of 2 frames: the permutation must move whole snippets
    model = build_model("tsn", num_classes=N, modality="rgbdiff", width=0.125, num_segments=K,
                        frames_per_segment=L, backbone="resnet18", consensus="avg").eval()
    x = torch.randn(B, 3, K * L, 32, 32)
    snippets = x.reshape(B, 3, K, L, 32, 32)
    permuted = snippets[:, :, [2, 0, 1]].reshape(B, 3, K * L, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(permuted))
        # Moving single frames across snippets is a different input, not a segment permutation.
        assert not torch.allclose(model(x), model(x.flip(2)))


def test_tsn_flow_stacks_fields_into_channels():
    L = 4
    model = build_model("tsn", num_classes=N, modality="flow", width=0.125, num_segments=K,
                        frames_per_segment=L, backbone="resnet18")
    assert model.backbone.conv1.in_channels == 2 * L
    assert model(torch.randn(1, 2, K * L, 32, 32)).shape == (1, N)
    with pytest.raises(ValueError, match="num_segments"):
        model(torch.randn(1, 2, K * L + 1, 32, 32))


def test_tsn_rejects_unsupported_modality_and_rgb_stacks():
    with pytest.raises(ValueError, match="rgb, flow, rgbdiff"):
        build_model("tsn", num_classes=N, modality="rgb+flow")
    with pytest.raises(ValueError, match="frames_per_segment"):
        build_model("tsn", num_classes=N, modality="rgb", frames_per_segment=5, width=0.125)


def test_tsn_partial_bn_freezes_all_but_the_first_norm():
    model = build_model("tsn", num_classes=N, width=0.125, backbone="resnet18", partial_bn=True).train()
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms[0].training and norms[0].weight.requires_grad
    assert all(not bn.training and not bn.weight.requires_grad for bn in norms[1:])
    running_mean = norms[1].running_mean.clone()
    model(torch.randn(2, 3, 3, 32, 32))
    torch.testing.assert_close(norms[1].running_mean, running_mean)


def _partial_bn_ddp_steps(rank: int, world: int, port: int, losses) -> None:
    """One rank of a gloo DDP run of TSN with partial BN: wrapped first, then model.train(), as the loop does."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(
            build_model("tsn", num_classes=N, width=0.125, backbone="resnet18", partial_bn=True))
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
        model.train()
        for step in range(3):  # DDP's reducer raised at step 1 when train() froze parameters after wrapping
            loss = model(torch.randn(2, 3, 3, 32, 32)).logsumexp(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses[rank] = loss.item()
    finally:
        dist.destroy_process_group()


def test_tsn_partial_bn_trains_under_ddp():
    """The tsn recipes (partial_bn: true, 8 workers) died at step 2 under DDP; two gloo processes here."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    losses = mp.get_context("spawn").Manager().dict()
    mp.spawn(_partial_bn_ddp_steps, args=(2, port, losses), nprocs=2)
    assert sorted(losses.keys()) == [0, 1]


def test_tsn_partial_bn_freezes_at_construction():
    """Before any train() call: DDP reads requires_grad when it wraps the model."""
    model = build_model("tsn", num_classes=N, width=0.125, backbone="resnet18", partial_bn=True)
    norms = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms[0].weight.requires_grad and not any(bn.weight.requires_grad for bn in norms[1:])
