"""ActionVLAD's VLAD pooling: shapes, normalisation, orderless pooling over space and time."""
import torch

from models import build_model
from models.actionvlad import VLADPooling


def test_vlad_is_normalised_and_orderless():
    torch.manual_seed(0)
    vlad = VLADPooling(dim=8, num_clusters=4)
    x = torch.randn(2, 30, 8)  # (B, N descriptors, D)
    out = vlad(x)
    assert out.shape == (2, 4 * 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    # intra-normalisation: every cluster's residual block has the same norm 1 / sqrt(K)
    torch.testing.assert_close(out.reshape(2, 4, 8).norm(dim=2), torch.full((2, 4), 0.5))
    torch.testing.assert_close(vlad(x[:, torch.randperm(30)]), out)


def test_hard_assignment_gives_residuals_to_the_nearest_centre():
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    vlad = VLADPooling(dim=2, num_clusters=2)
    vlad.init_centres(centres, alpha=1000.0)  # ~hard nearest-centre assignment
    x = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])  # one descriptor near each centre
    # residuals (1, 0) and (0, 2) -> each intra-normalised to a unit vector, then / sqrt(2)
    expected = torch.tensor([[1.0, 0.0, 0.0, 1.0]]) / 2 ** 0.5
    torch.testing.assert_close(vlad(x), expected)


def test_actionvlad_is_invariant_to_frame_order():
    torch.manual_seed(0)
    model = build_model("actionvlad", num_classes=3, width=0.125, num_clusters=4, backbone="resnet18").eval()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x[:, :, [3, 1, 0, 2]]))
    flow = build_model("actionvlad", num_classes=3, modality="flow", width=0.125, frames_per_sample=3)
    assert flow.backbone.conv1.in_channels == 6
