"""Starting a model from weights trained elsewhere, the way the papers do it.

- ImageNet weights into a 2D backbone (`load_2d_weights`), with a flow or RGB-difference first
  layer made by TSN's cross-modality initialisation (`cross_modality_init`).
- ImageNet weights inflated into a 3D network (`inflate_conv_weight`, `inflate_state_dict`), I3D's
  "bootstrapping": a 2D filter repeated T times over time and divided by T answers a clip of one
  repeated frame exactly as the 2D filter answers that frame, so the 3D net starts where the 2D
  net ended.
- An actionlab checkpoint into a model for fine-tuning (`load_checkpoint`): pretrain on a large
  source dataset, fine-tune on a small target one with a fresh classifier.

Files are read with `weights_only=True` (a checkpoint is data, never code to run). Only torchvision's
own weights (`imagenet`, or a weights name) are downloaded, by torchvision into the torch cache,
when they are not there yet.
"""
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

# Keys of the ImageNet classifier in torchvision state dicts ("fc." in ResNet/GoogLeNet,
# "classifier." in DenseNet/VGG) and of GoogLeNet's auxiliary heads: a video model never reuses
# them, because its classes differ.
IMAGENET_HEAD_PREFIXES = ("fc.", "classifier.", "aux1.", "aux2.")

_SHOWN = 5  # how many offending layer names an error message lists before "... (N in all)"


class WeightsError(Exception):
    """Weights that cannot be had or do not fit the model: the message names the file or the layers,
    the likely cause and the fix. The model zoo imports nothing from the orchestrator, whose CLI and
    preflight print this error as they print their own `UserError`s."""


def cross_modality_init(weight_rgb: Tensor, in_channels: int) -> Tensor:
    """TSN's cross-modality initialisation of a first layer that does not take RGB.

    Flow fields and RGB differences have other statistics than RGB but the same spatial
    structure, so each new input channel starts as the average RGB filter (Wang et al.,
    "Temporal Segment Networks", ECCV 2016, Sec. 3.2).

    Args:
        weight_rgb: (O, 3, *kernel) first-layer weight trained on RGB; kernel is (kH, kW) or
            (kT, kH, kW).
        in_channels: input channels of the new layer (2L for L stacked flow fields).

    Returns:
        (O, in_channels, *kernel) weight: every input channel equals the mean over RGB.
    """
    mean = weight_rgb.mean(dim=1, keepdim=True)  # (O, 1, *kernel)
    return mean.repeat(1, in_channels, *([1] * (weight_rgb.dim() - 2))).contiguous()


def inflate_conv_weight(weight_2d: Tensor, time: int) -> Tensor:
    """Inflate a 2D convolution kernel to 3D (Carreira & Zisserman, CVPR 2017, Sec. 2.4).

    Args:
        weight_2d: (O, I, kH, kW).
        time: temporal kernel size kT of the 3D layer.

    Returns:
        (O, I, time, kH, kW): the 2D kernel repeated `time` times and divided by `time`, so the
        3D layer's response to a temporally constant input equals the 2D layer's response.
    """
    return weight_2d.unsqueeze(2).repeat(1, 1, time, 1, 1) / time


def inflate_state_dict(state_2d: dict[str, Tensor], model_3d: nn.Module, *,
                       skip: tuple[str, ...] = IMAGENET_HEAD_PREFIXES) -> dict[str, Tensor]:
    """Turn a 2D network's state dict into one for its inflated 3D counterpart.

    The 3D model must name its layers like the 2D one (I3D mirrors torchvision's GoogLeNet, T3D its
    DenseNet). Every 4D conv weight whose 3D counterpart is 5D is inflated over the 3D kernel's
    time size; a first layer that takes other than 3 channels (flow) gets `cross_modality_init`;
    batch-norm statistics and everything else are copied unchanged.

    Args:
        state_2d: the 2D state dict (e.g. `torch.load` of a torchvision checkpoint).
        model_3d: the 3D model; only its state dict's keys and shapes are read.
        skip: key prefixes of the 3D model left out (its classifier, layers with no 2D
            counterpart); keys of `state_2d` the 3D model lacks (ImageNet classifier, auxiliary
            heads) are ignored.

    Returns:
        A state dict holding every key of `model_3d` except the skipped ones; load it with
        `model_3d.load_state_dict(result, strict=False)`.

    Raises:
        WeightsError: a key of the 3D model is missing from `state_2d`, or a shape does not match
            even after inflation (a different width or a different network).
    """
    result, missing, mismatched = {}, [], []
    for key, target in model_3d.state_dict().items():
        if key.startswith(skip):
            continue
        if key not in state_2d:
            missing.append(key)
            continue
        value = state_2d[key]
        if value.dim() == 4 and target.dim() == 5:
            value = inflate_conv_weight(value, target.shape[2])
        if value.dim() >= 4 and value.shape[1] == 3 and target.shape[1] != 3:
            # Only an input layer takes exactly 3 channels: this is a flow/RGB-diff first layer.
            value = cross_modality_init(value, target.shape[1])
        if value.shape != target.shape:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(target.shape)}")
            continue
        result[key] = value.to(target.dtype)
    if missing or mismatched:
        raise WeightsError(_describe_mismatch(
            "2D weights do not fit the 3D model", missing=missing, mismatched=mismatched,
            cause="the 2D checkpoint is another network or another width than the model"))
    return result


IMAGENET = "imagenet"  # model.pretrained: torchvision's ImageNet weights of the architecture's 2D network


def _cached_or_downloaded(weights, what: str) -> Path:
    """The file of torchvision weights `weights` in the torch cache, downloaded there first by
    torchvision's own loader (hash checked) when it is missing and the network allows."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file():
        try:
            weights.get_state_dict(progress=True, check_hash=True)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; a bad hash a RuntimeError
            raise WeightsError(f"{what}: {cached.name} is not in the torch cache and could not be downloaded ({err}); "
                               f"on a machine with internet fetch {weights.url} and put it in {cached.parent}, or give "
                               "the file's path") from None
    return cached


def resolve_weights(spec: str | Path, *, network: str | None = None) -> Path:
    """A local weights file from a path, a torchvision weights name, or `imagenet`.

    Args:
        spec: a file path; a name of torchvision's weights API such as
            "ResNet50_Weights.IMAGENET1K_V2"; or "imagenet": the ImageNet-1k weights (IMAGENET1K_V1,
            those the papers started from) of `network`. Named weights come from the torch cache
            (`torch.hub.get_dir()/checkpoints`), downloaded there by torchvision when missing.
        network: the torchvision 2D network the weights are for (e.g. "resnet50", "googlenet");
            needed for "imagenet".
    Raises:
        WeightsError: no such file; an unknown name; weights neither cached nor downloadable (the
            message names the file and the folder to put it in); "imagenet" for a network that
            torchvision has no ImageNet weights of.
    """
    import torchvision

    path = Path(spec).expanduser()
    if path.is_file():
        return path.resolve()
    if str(spec) == IMAGENET:
        if network is None:
            raise WeightsError("imagenet: this architecture has no 2D network that ImageNet weights exist for (C3D "
                               "and R(2+1)D start from video data sets); give a weights file instead")
        try:
            weights = torchvision.models.get_model_weights(network).IMAGENET1K_V1
        except (ValueError, KeyError, AttributeError) as err:
            raise WeightsError(f"imagenet: torchvision has no ImageNet weights for {network!r} ({err})") from None
        return _cached_or_downloaded(weights, f"imagenet ({network}: {weights})")
    if "_Weights." in str(spec):
        try:
            weights = torchvision.models.get_weight(str(spec))
        except (ValueError, KeyError, AttributeError) as err:
            raise WeightsError(f"{spec}: not a torchvision weights name ({err})") from None
        return _cached_or_downloaded(weights, str(spec))
    raise WeightsError(f"{spec}: no such weights file; give a local checkpoint path, `imagenet`, or a torchvision "
                       "weights name such as ResNet50_Weights.IMAGENET1K_V2")


def load_2d_weights(net: nn.Module, path: str | Path, *, network: str | None = None) -> None:
    """Load a local torchvision ImageNet checkpoint into a 2D backbone, in place.

    The ImageNet classifier ("fc."/"classifier." keys) is dropped; a first layer with other than
    3 input channels (flow, stacked RGB differences) is made by `cross_modality_init`.

    Args:
        net: a 2D backbone named like torchvision's network (e.g. `backbones.ResNetFeatures`).
        path: the checkpoint file, e.g. ~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth, or a
            name `resolve_weights` takes.
        network: the backbone's torchvision name, for `path` = "imagenet".

    Raises:
        WeightsError: the file is missing, or its layers do not match the backbone's (names listed).
    """
    state = {k: v for k, v in read_state_dict(path, network=network).items() if not k.startswith(IMAGENET_HEAD_PREFIXES)}
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = []
    for key in (k for k in own if k in state):
        value = state[key]
        if value.dim() >= 4 and value.shape[1] == 3 and own[key].shape[1] != 3:
            value = state[key] = cross_modality_init(value, own[key].shape[1])
        if value.shape != own[key].shape:
            mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
    if missing or unexpected or mismatched:
        raise WeightsError(_describe_mismatch(
            f"{path} does not fit the {type(net).__name__} backbone", missing=missing,
            unexpected=unexpected, mismatched=mismatched,
            cause="the checkpoint is another architecture (e.g. resnet50 for resnet18) or the "
                  "backbone's width is not 1.0"))
    net.load_state_dict(state)


def load_checkpoint(model: nn.Module, path: str | Path, *, skip_head: bool = True,
                    class_names: Sequence[str] | None = None) -> list[str]:
    """Load an actionlab checkpoint into `model`, in place, to fine-tune it on another dataset.

    Args:
        model: the model to fine-tune, built with the same architecture, width and modality as the
            checkpoint's.
        path: a file saved by `torch.save`, holding either {"model": state_dict, ...} (actionlab's
            training checkpoints, with their "class_names") or a bare state dict.
        skip_head: when the classes differ, keep the model's fresh classifier: every `nn.Linear` whose
            checkpoint weight differs only in its output size is skipped, and, when the checkpoint names
            its classes and they are not `class_names` (the model's, in label order), every `nn.Linear`
            with one output per class too: a head of another task's classes of the same count would
            otherwise start fine-tuning with an arbitrary class mapping.

    Returns:
        The skipped keys (empty when the checkpoint's classes match the model's).

    Raises:
        WeightsError: any other key missing, unexpected or of another shape; the message names the
            first few layers and the likely cause.
    """
    state, trained_on = _read_checkpoint(resolve_weights(path))
    own = model.state_dict()
    head_keys = set()
    if skip_head:
        relabelled = trained_on is not None and class_names is not None and list(trained_on) != list(class_names)
        head_keys = _classifier_keys(model, state, num_classes=len(class_names) if relabelled else None)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
                  if k in state and k not in head_keys and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        raise WeightsError(_describe_mismatch(
            f"checkpoint {path} does not fit the {type(model).__name__} model", missing=missing,
            unexpected=unexpected, mismatched=mismatched,
            cause="the checkpoint was trained with another architecture, width or modality; "
                  "build the model with the checkpoint run's settings"))
    model.load_state_dict({k: v for k, v in state.items() if k not in head_keys}, strict=False)
    return sorted(head_keys)


def read_state_dict(path: str | Path, *, network: str | None = None) -> dict[str, Tensor]:
    """Read a state dict (bare, or under "model" in an actionlab checkpoint) from a local file, or
    from torchvision's weights named by `path` (see `resolve_weights`, which takes `network`)."""
    return _read_checkpoint(resolve_weights(path, network=network))[0]


def _read_checkpoint(path: Path) -> tuple[dict[str, Tensor], list[str] | None]:
    """(state dict, the class names an actionlab checkpoint was trained on, else None) of a local file."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    names = obj.get("class_names") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds no state dict (expected a dict of tensors, or one under 'model')")
    return obj, names


def _classifier_keys(model: nn.Module, state: dict[str, Tensor], *, num_classes: int | None = None) -> set[str]:
    """Keys of the Linear layers whose checkpoint weight differs from the model's only in dim 0, and
    (`num_classes` given: the checkpoint's classes are others) of those with one output per class.

    A different number of classes changes dim 0 and nothing else does: a different width would also
    change the input size of the following layers.
    """
    keys = set()
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        weight = state.get(f"{name}.weight")
        if weight is None or weight.dim() != 2 or weight.shape[1] != module.in_features:
            continue
        if weight.shape != module.weight.shape or module.out_features == num_classes:
            keys.update(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return keys


def _describe_mismatch(what: str, *, missing=(), unexpected=(), mismatched=(), cause: str) -> str:
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            shown = ", ".join(list(keys)[:_SHOWN])
            more = f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else ""
            parts.append(f"{label}: {shown}{more}")
    return f"{what}: {'; '.join(parts)}. Likely cause: {cause}."
