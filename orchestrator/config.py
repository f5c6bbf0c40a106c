"""Experiments as values: one frozen, typed config, parsed and checked once, before anything runs.

An experiment YAML has the sections below (every key optional except where a default cannot
exist). `parse_experiment` turns its dict into an `ExperimentConfig` (pydantic v2: frozen, unknown
keys refused, `Literal` choices, `Field` limits, no inf or nan anywhere, cross-field rules) and
checks every study variant and sweep grid value as a whole config too; each error names the file,
the dotted field and the fix, quoting at most ~200 characters of the value (`quote`). Nothing here
touches the file system, MLflow or a model's weights: that is `orchestrator.preflight`, which every
command runs once before it launches anything. The frozen object then travels to Tune trials and
Ray Train workers as it is.

`input_spec` (`orchestrator.inputs`, re-exported here) is where the data section and an
architecture's declared input (`models.contracts.MODEL_INPUTS`, a table that imports no torch) meet:
the clip's time layout (K segments x L frames; T = K * L), each stream's (C, T, H, W) and the
builder's keywords, derived from the checked sections' plain values.
"""
from __future__ import annotations

import difflib
import math
import os
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_serializer, model_validator)
from pydantic.json_schema import SkipJsonSchema

from models.contracts import MODEL_INPUTS
from orchestrator.errors import UserError
from orchestrator.inputs import (CHANNELS, ClipLayout, InputSpec, clip_layout,  # noqa: F401 (re-exported)
                                 example_input, input_spec, model_input_spec, sampler_layout)
from orchestrator.tracking import hide_password, resolve_tracking_uri  # noqa: F401 (re-exported)

# Names the data layer implements (tests/test_config.py checks them against its registries).
Dataset = Literal["ucf101", "hmdb51", "kinetics", "csv"]  # orchestrator.data.annotations.DATASETS
Sampler = Literal["tsn", "dense"]  # orchestrator.data.sampling.SAMPLERS
FlowMethod = Literal["farneback", "tvl1", "raft"]  # orchestrator.data.flow.FLOW_METHODS
FlowFormat = Literal["jpg", "png", "npy"]  # orchestrator.data.flow.FLOW_FORMATS
Modality = Literal["rgb", "flow", "rgbdiff", "rgb+flow"]
Architecture = Literal[tuple(sorted(MODEL_INPUTS))]  # the architectures' names (models/contracts.py)
FusionMode = Literal["softmax", "logits"]  # orchestrator.late_fusion.FUSION_MODES

MLFLOW_RUN_PREFIX = "mlflow:"  # init_checkpoint: the final weights of an earlier run
VARIANT_PREFIX = "variant:"  # in a study: fine-tune from another variant's run (same dataset and seed)


def _absolute(path: str | None) -> str | None:
    """Relative paths are relative to the directory the command runs in; they are made absolute at
    parse time, because Ray workers and trial drivers run in other directories."""
    return os.path.abspath(os.path.expanduser(path)) if path else path


def _weights(spec: str | None) -> str | None:  # `imagenet` and torchvision weights names stay names
    return spec if spec == "imagenet" or (spec and "_Weights." in spec and "/" not in spec) else _absolute(spec)


def _checkpoint(spec: str | None) -> str | None:  # a run or study-variant reference stays a reference
    return spec if spec and spec.startswith((MLFLOW_RUN_PREFIX, VARIANT_PREFIX)) else _absolute(spec)


def _finite(value: Any) -> Any:
    """Free-form values (builder options, a synthetic spec) hold no inf or nan either, at any depth."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ():
        _finite(item)
    return value


AbsPath = Annotated[str, BeforeValidator(_absolute)]
OptionalPath = Annotated[str | None, BeforeValidator(_absolute)]
Positive = Annotated[int, Field(gt=0)]
FiniteAny = Annotated[Any, AfterValidator(_finite)]
# numpy's generators take seeds >= 0 (`default_rng([seed, epoch, index])` per item), torch.manual_seed < 2**64
Seed = Annotated[int, Field(ge=0, lt=2**64)]


class _Section(BaseModel):
    # allow_inf_nan: `.inf` / `.nan` pass every `gt` / `le` limit or make one meaningless (an inf lr or
    # flow_bound trains on nan or all-zero flow; an inf width overflows the model's channel count)
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)


class ValSplit(_Section):
    """A validation list carved from the training list: what sweeps, ASHA, `optim.keep: best_val` and
    `late_fusion.weight: auto` select on, so the test list is scored once, for what was selected."""
    # by group: that share of the training list's groups; by video: of each class's training videos
    fraction: float = Field(0.2, gt=0, lt=1)
    # auto: ucf101 by group (a group's clips share actors and background: splitting one leaks),
    # hmdb51 by source video (its clips cut from one video share it: val_split.hmdb_source), csv by its
    # `group` column when it has one (else by video), kinetics its own val
    # list (the test list is then its labelled test rows); list: kinetics only. Kinetics by group carves
    # whole YouTube videos (clips of one video share its footage)
    by: Literal["auto", "group", "video", "list"] = "auto"
    seed: Seed = 0  # which groups / videos; fixed across a study's seeds, so every variant sees the same lists


class DataConfig(_Section):
    dataset: Dataset = "ucf101"  # which annotation reader
    root: AbsPath = "data/synth/UCF101"  # folder holding the videos
    annotations: AbsPath = "data/synth/ucfTrainTestlist"  # split folder (UCF/HMDB) or CSV file
    test_annotations: OptionalPath = None  # csv data sets: the held-out `path,label` list (others have splits)
    split: Literal[1, 2, 3] = 1  # official split number
    # held-out validation list (null: none; val/* metrics and every selection then use the test list,
    # and tables say "selected on test")
    val: ValSplit | None = Field(default_factory=ValSplit)
    # generate the synthetic benchmark into root's parent when missing; a mapping sets SynthSpec
    # fields or a preset ({preset: camera, ...}, orchestrator/data/synth.py), checked by preflight; a
    # study variant's mapping is merged key by key into the base's, like every mapping
    synth: bool | dict[str, FiniteAny] = False
    flow_dir: OptionalPath = None  # flow cache; default <root>_flow/<flow_method>
    flow_method: FlowMethod = "farneback"  # farneback (fast CPU) | tvl1 (accurate, slow) | raft (GPU)
    flow_warp: bool = False  # TSN's warped flow: the camera's motion (a RANSAC homography) subtracted
    flow_bound: float = Field(20.0, gt=0)  # flow is clipped to +-bound pixels and quantised to uint8
    # cache: jpg (TSN's per-field JPEGs, q95, ~1/10 the bytes) | png (lossless) | npy (one array per video)
    flow_format: FlowFormat = "jpg"
    sampler: Sampler = "tsn"  # tsn: K segments (TSN, two-stream) | dense: T frames at stride s (C3D, I3D)
    num_segments: Positive = 3  # TSN's K
    frames_per_segment: Positive = 1  # 1 RGB frame, L flow fields, or L+1 frames for RGB difference
    clip_len: Positive = 16  # dense sampler: frames per clip
    stride: Positive = 1  # dense sampler: frame stride
    # dense sampler: play a video shorter than the clip in a loop (I3D: 64-frame clips; part of HMDB-51
    # is shorter) instead of skipping it with a warning
    loop_short: bool = False
    # sample each video as if resampled to this many frames a second (I3D: 25), whatever its file's rate
    # (HMDB-51 is 30, Kinetics mostly 30, UCF-101 25): the sampler's frames are then the same span of time
    # in every video (orchestrator/data/sampling.py, native_frame_indices). null: the file's own frames.
    # At most 1000: more reads each frame of a 30 fps file over 30 times, a typo
    fps: Annotated[float, Field(gt=0, le=1000)] | None = None
    # resize the shorter side first (TSN used 256); at most 8K video's 4320: resizing past the source adds no
    # detail, and 1e8 asks for petabytes per frame
    short_side: Annotated[int, Field(gt=0, le=4320)] = 64
    crop_size: Positive = 56  # network input size (TSN used 224)
    train_crop: Literal["random", "multiscale"] = "multiscale"
    test_crop: Literal["center", "three", "ten"] = "center"  # views multiply
    flip: bool = True  # random horizontal flips in training; off when classes are left/right mirror images
    test_clips: Positive = 1  # clips per video at test time; scores are averaged per video
    # DataLoader processes per training worker; auto: every CPU it holds (scaling.cpus_per_worker)
    # but the one it trains on. Kept alive across epochs.
    loader_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    # dataloader: decode in this worker's DataLoader processes (loader_workers); ray_data: in Ray
    # Data tasks on any free CPU of the cluster, CPU-only nodes included (same batches)
    loader: Literal["dataloader", "ray_data"] = "dataloader"
    # seconds one video's decoding may take before its decode process is killed and the video
    # skipped (decord can loop forever on a file listing more frames than decode); 0 or null:
    # decode in the loading process, unbounded. The slowest legitimate reads measured (2 loaded
    # cores): 2.2 s for every frame of a 72 s 320x240 video, 0.75 s for every frame of a 10 s
    # 340x256 one, 6.3 s for every frame of a 10 s 1280x720 AVI: 60 is 27x the first, 10x the last.
    # At most an hour (570x the slowest): longer is a hang, and past 2**31 ms (~25 days) the wait
    # itself overflows (OverflowError for every video).
    decode_timeout_s: Annotated[float, Field(ge=0, le=3600)] | None = 60.0
    # the library that decodes video files (orchestrator/data/decoders.py): decord | torchcodec (an optional
    # extra, `pip install -e ".[torchcodec]"`, with FFmpeg's shared libraries) | pyav (in order from the first
    # frame: exact on any container, slow on late frames). `actionlab bench input` puts them side by side
    decoder: Literal["decord", "torchcodec", "pyav"] = "decord"
    # where frames are decoded and clips resized, cropped and flipped: cpu (the loader processes) | cuda (the
    # training GPU: loader processes only read bytes or open the video and draw the crop; nvJPEG decodes each
    # batch's JPEGs at once, torchcodec a video's frames with data.decoder: torchcodec (not .avi); other video
    # files are decoded on the CPU; orchestrator/data/device_decode.py). cuda needs GPU workers: refused
    # without them, never ignored
    decode_device: Literal["cpu", "cuda"] = "cpu"

    def resolved_flow_dir(self) -> Path:
        if self.flow_dir:
            return Path(self.flow_dir)
        root = Path(self.root)
        return root.parent / f"{root.name}_flow" / (self.flow_method + ("_warped" if self.flow_warp else ""))


class ModelConfig(_Section):
    architecture: Architecture = "tsn"  # a name from `actionlab models`
    modality: Modality = "rgb"  # what the model sees; rgb+flow only for two-stream architectures
    width: float = Field(1.0, gt=0)  # channel multiplier; 1.0 is the published network
    dropout: float = Field(0.5, ge=0, lt=1)
    # 2D backbone weights: imagenet (torchvision's, for the architecture's 2D network), a torchvision
    # weights name (e.g. ResNet18_Weights.IMAGENET1K_V1), or a file; names are downloaded into the torch cache
    pretrained: Annotated[str | None, BeforeValidator(_weights)] = None
    # fine-tune from an earlier run: its model.pt, mlflow:<run_id>, or (studies) variant:<name>
    init_checkpoint: Annotated[str | None, BeforeValidator(_checkpoint)] = None
    options: dict[str, FiniteAny] = {}  # the builder's own keywords, e.g. {consensus: avg}


class OptimConfig(_Section):
    # The schedule's length, one of two ways. epochs: passes over the training list; at most 10,000 (the
    # shipped recipes train 8 to 1430; more is a typo: 1.0e+15 passes as a whole number). iterations:
    # optimiser steps of optim.batch_size x the max workers clips, as the papers give their schedules (TSN:
    # 4,500 RGB / 20,000 flow steps of 256); the epochs are then derived at run time from the list the run
    # trains on (after data.val's carve: epochs from the whole list would run ~80 % of the steps), the last
    # one stopping at the last step (training/elastic.schedule), and the warm-up and cosine span the steps
    epochs: Annotated[int, Field(gt=0, le=10_000)] | None = 10
    iterations: Annotated[int, Field(gt=0, le=10_000_000)] | None = None
    batch_size: Positive = 8  # per training worker
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)  # for the whole batch (batch_size x workers); not rescaled silently
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)  # linear warm-up, then cosine decay
    grad_clip: float = Field(40.0, ge=0)  # TSN clips the gradient norm at 40; 0 disables
    # autocast: auto = bf16 where the GPU supports it (no loss scaling needed), else fp16 with a
    # GradScaler; fp32 on CPU. bf16 / fp16 / fp32 force one (fp16 always with a GradScaler)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # GPU: convolutions in NHWC / NDHWC memory format (tensor cores); ignored on CPU
    compile: bool = False  # torch.compile the model: faster steps after a slow first one (it compiles)
    eval_every: Positive = 1  # epochs between validation passes
    # views (clips x crops) per forward pass at evaluation; a loader batch holds as many whole videos as
    # fit in these views and in 128 MiB (at least one: loop.EVAL_LOADER_BATCH_BYTES), so host and device
    # memory stay bounded at any test_clips x test_crop: the papers' 25 x ten-crop flow stacks are 250
    # views, 251 MB of uint8 per video at 224 px
    eval_batch_size: Positive = 64
    # the weights the test list scores, once, after the last epoch: the last epoch's, or those of the
    # epoch with the best val/video_top1 (a validation pass every eval_every epochs)
    keep: Literal["last", "best_val"] = "last"

    @model_validator(mode="before")
    @classmethod
    def _one_length(cls, value: Any) -> Any:
        """optim.iterations replaces optim.epochs (whose default would otherwise stand beside it)."""
        if isinstance(value, dict) and value.get("iterations") is not None:
            if value.get("epochs") is not None:
                raise ValueError("optim.epochs and optim.iterations both given: the schedule is one of them; "
                                 "remove one")
            value = {**value, "epochs": None}
        elif isinstance(value, dict) and "epochs" in value and value["epochs"] is None:
            raise ValueError("optim.epochs: null needs optim.iterations; give one of them")
        return value


def _workers(value: Any) -> Any:
    """`num_workers`: a whole number > 0, or [min, max] (YAML gives a list) as the tuple Ray Train's
    elastic mode takes."""
    counts = tuple(value) if isinstance(value, list | tuple) else (value,)
    if len(counts) not in (1, 2) or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts):
        raise ValueError(f"expected a number of workers > 0 or [min, max] of them, got {quote(value)}")
    if len(counts) == 2 and counts[0] > counts[1]:
        raise ValueError(f"expected [min, max] with min <= max, got {quote(value)}")
    return counts if isinstance(value, list | tuple) else value


class ScalingConfig(_Section):
    # Ray Train workers (data-parallel replicas): a number, or [min, max] for an elastic run that starts with
    # what the cluster has (at least min), goes on smaller after a node loss and grows back when nodes return
    num_workers: Annotated[int | tuple[int, int], BeforeValidator(_workers)] = 1
    # elastic runs: what a change of world size keeps (orchestrator/training/elastic.py): the global batch
    # (per-worker batch = global / world, gradient accumulation where one step's share exceeds
    # optim.batch_size), or the per-worker batch with the learning rate scaled linearly (Goyal et al. 2017)
    on_resize: Literal["keep_global_batch", "keep_worker_batch"] = "keep_global_batch"
    resize_interval_s: float = Field(60.0, ge=0)  # how often a running elastic group looks for more workers
    # how long Ray Train waits for a worker group to start before it decides again (its
    # RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s by default): right after a node loss its view of the
    # cluster can still count the lost node, and the group then waits this long for a worker that never comes
    start_timeout_s: float = Field(30.0, gt=0)
    use_gpu: Literal["auto", True, False] = "auto"  # auto: GPUs when the cluster has them
    cpus_per_worker: float = Field(1.0, gt=0)
    storage_path: AbsPath = "actionlab_runs"  # checkpoints, Ray results and run outputs; shared storage on clusters
    max_failures: int = Field(0, ge=-1)  # worker-group restarts from the last checkpoint after a failure (-1: any)
    # restarts after a node preemption (a drain notice), counted apart from max_failures (-1: any)
    max_preemption_failures: int = Field(-1, ge=-1)
    preemption_grace_s: float = Field(0.0, ge=0)  # how long survivors may run past a preemption's deadline
    # also checkpoint every N optimiser steps (0: at epoch ends only): a lost node then costs at most N steps
    checkpoint_every_steps: int = Field(0, ge=0)
    # custom Ray resources each training worker also asks for, e.g. {accelerator_type:H100: 0.001} or a
    # node label, to keep training on GPU nodes while ray_data decodes on others (CPU, GPU: above)
    worker_resources: dict[str, float] = {}

    @field_validator("worker_resources")
    @classmethod
    def _custom_only(cls, value: dict[str, float]) -> dict[str, float]:
        if taken := [k for k in value if k in ("CPU", "GPU")]:
            raise ValueError(f"{', '.join(taken)} are set by scaling.cpus_per_worker and scaling.use_gpu; "
                             "list only custom resources here")
        return value

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if isinstance(self.num_workers, tuple) else self.num_workers

    @property
    def max_workers(self) -> int:
        """The world size the optimiser settings are written for (optim.batch_size per worker, optim.lr)."""
        return self.num_workers[1] if isinstance(self.num_workers, tuple) else self.num_workers


def _pair(value: Any) -> Any:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise ValueError(f"expected [low, high], got {quote(value)}")
    return value


Values = Annotated[list[Any], Field(min_length=1)]
Range = Annotated[tuple[float, float], BeforeValidator(_pair)]
IntRange = Annotated[tuple[int, int], BeforeValidator(_pair)]
SEARCH_SPACES = ("grid", "choice", "uniform", "loguniform", "randint")


class SearchSpace(_Section):
    """Exactly one of: grid / choice (values), uniform / loguniform / randint ([low, high])."""
    grid: Values | None = None  # every value, each a trial
    choice: Values | None = None  # sampled num_samples times
    uniform: Range | None = None
    loguniform: Range | None = None
    randint: IntRange | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, value: Any) -> Any:
        if not (isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SEARCH_SPACES):
            raise ValueError(f"expected one of {', '.join('{' + k + ': ...}' for k in SEARCH_SPACES)}, "
                             f"got {quote(value)}")
        return value

    @model_serializer(mode="wrap")
    def _as_written(self, handler) -> dict:  # {grid: [...]}, as in the experiment file
        return {self.kind: handler(self)[self.kind]}

    @property
    def kind(self) -> str:
        return next(k for k in SEARCH_SPACES if getattr(self, k) is not None)

    @property
    def values(self) -> list | tuple:
        return getattr(self, self.kind)


class SweepConfig(_Section):
    parameters: dict[str, SearchSpace] = Field({}, min_length=1)  # dotted field -> search space
    num_samples: Positive = 1  # repeats of the grid (or random samples)
    scheduler: Literal["fifo", "asha"] = "fifo"
    metric: str = "val/video_top1"  # on data.val, the list carved from the training list (the test list without it)
    mode: Literal["max", "min"] = "max"
    max_concurrent_trials: Positive | None = None  # default: what the cluster's CPUs/GPUs allow


class LateFusion(_Section):
    """Score-level fusion of two trained study variants, computed offline from their per-video scores."""
    streams: tuple[str, str]  # two study variants
    # the first stream's share; auto: the best on both streams' val scores (data.val), then applied to test
    weight: Annotated[float, Field(ge=0, le=1)] | Literal["auto"] = 0.5
    # auto: softmax or logits, whichever is better on val; default: auto with weight auto, else softmax
    mode: FusionMode | Literal["auto"] | None = None

    @property
    def resolved_mode(self) -> str:
        return self.mode or ("auto" if self.weight == "auto" else "softmax")


class Expected(_Section):
    """A published figure a recipe reproduces: printed beside the measured one."""
    top1: float = Field(ge=0, le=100)  # the figure, %: video top-1, or the metric `metric` names
    source: str  # paper and table, e.g. "Wang et al. 2016 (TSN), Table 4"
    # the logged metric the figure is measured as: video top-1, or mean class accuracy (the mean over
    # classes of each class's top-1 recall: what TSN's tools/eval_net.py and eval_scores.py print)
    metric: Literal["test/video_top1", "test/video_mean_class_acc"] = "test/video_top1"


class StudyConfig(_Section):
    variants: dict[str, dict[str, Any]] = Field({}, min_length=1)  # name -> {dotted field: value}
    late_fusion: dict[str, LateFusion] = {}
    datasets: dict[str, dict[str, Any]] = {}  # name -> {dotted data field: value}; default: the data section
    seeds: list[Seed] = Field([0], min_length=1)
    # pairs (a, b) whose difference a - b the table reports with a paired bootstrap CI (orchestrator/stats.py)
    compare: list[tuple[str, str]] = []
    # variant or late_fusion name -> the paper's figure (recipes, experiments/recipes/)
    expected: dict[str, Expected] = {}

    @model_validator(mode="after")
    def _streams_are_variants(self) -> StudyConfig:
        for name, fusion in self.late_fusion.items():
            if any(v not in self.variants for v in fusion.streams):
                raise ValueError(f"study.late_fusion.{name}.streams must name two study variants "
                                 f"(have: {', '.join(self.variants)}), got {quote(list(fusion.streams))}")
        names = [*self.variants, *self.late_fusion]
        for i, pair in enumerate(self.compare):
            if any(v not in names for v in pair) or pair[0] == pair[1]:
                raise ValueError(f"study.compare.{i} must name two different study variants or late_fusion "
                                 f"entries (have: {', '.join(names)}), got {quote(list(pair))}")
        for key in self.expected:
            if key not in names:
                raise ValueError(f"study.expected.{key} must name a study variant or late_fusion entry "
                                 f"(have: {', '.join(names)})")
        return self


class TrackingConfig(_Section):
    # None: SQLite store ./mlflow.db (made absolute); a server URL on clusters
    tracking_uri: Annotated[str | None, BeforeValidator(resolve_tracking_uri)] = None
    experiment: str | None = None  # MLflow experiment; default: the experiment's name
    # CPU / memory / GPU samples of every training node, as MLflow system metrics; 0: none
    system_metrics_interval_s: float = Field(10.0, ge=0)


class ExperimentConfig(_Section):
    name: str = "experiment"
    description: str = ""
    seed: Seed = 0
    data: DataConfig = Field(default_factory=DataConfig)  # factories: paths resolve where the command runs
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    sweep: SweepConfig | None = None
    study: StudyConfig | None = None
    source: SkipJsonSchema[str] = ""  # the YAML file this came from (error messages, artifacts)

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def to_dict(self) -> dict:
        """Plain values (the experiment.yaml artifact, MLflow params), passwords in URIs masked
        (`tracking.hide_password`): whoever reads the tracking store must not read them there."""
        return _hide_passwords(self.model_dump(mode="json", exclude={"source"}))

    @model_validator(mode="after")
    def _data_fits_model(self) -> ExperimentConfig:
        d, m = self.data, self.model
        if d.crop_size > d.short_side:
            raise ValueError(f"data.crop_size ({d.crop_size}) is larger than data.short_side ({d.short_side}); "
                             "lower crop_size or raise short_side")
        if d.dataset == "csv" and not d.test_annotations:
            raise ValueError("data.test_annotations: a csv data set is one list; give a second `path,label` CSV of "
                             "held-out videos to test on (testing on the training list would report training accuracy)")
        if d.val and d.val.by == "list" and d.dataset != "kinetics":
            raise ValueError(f"data.val.by 'list': only kinetics has an official val list; {d.dataset} carves one "
                             "from its training list (by: auto)")
        if self.sweep and self.sweep.scheduler == "asha" and self.optim.iterations:
            raise ValueError("sweep.scheduler 'asha' stops trials at epoch rungs up to optim.epochs, which "
                             "optim.iterations leaves to run time: give optim.epochs, or use scheduler 'fifo'")
        if d.decode_device == "cuda" and self.scaling.use_gpu is False:
            raise ValueError("data.decode_device 'cuda' decodes on the training GPUs, but scaling.use_gpu is false: "
                             "set data.decode_device: cpu, or scaling.use_gpu: auto")
        if self.optim.keep == "best_val" and not d.val:
            raise ValueError("optim.keep 'best_val' needs data.val (selecting on the test list would report a "
                             "tuned test score); set data.val or keep: last")
        contract = MODEL_INPUTS[m.architecture]
        if m.modality not in contract.modalities:
            raise ValueError(f"model.modality {m.modality!r} does not fit model.architecture {m.architecture}, "
                             f"which takes {' or '.join(contract.modalities)}")
        if contract.layout == "segments" and d.sampler != "tsn":
            raise ValueError(f"data.sampler {d.sampler!r} does not fit model.architecture {m.architecture}, which "
                             "takes K segments x L frames: set data.sampler: tsn")
        layout = clip_layout(d)
        if m.modality == "rgbdiff" and layout.frames_per_segment < 2:
            raise ValueError(f"data.{'frames_per_segment' if d.sampler == 'tsn' else 'clip_len'} must be >= 2 for "
                             "model.modality rgbdiff (L+1 frames give L differences); TSN used 6")
        derived = {contract.segments_kw: "data.num_segments", contract.snippet_kw: "data.frames_per_segment"}
        for keyword, field in derived.items():
            if keyword and keyword in m.options:
                raise ValueError(f"model.options.{keyword} ({quote(m.options[keyword])}) duplicates {field} "
                                 f"({getattr(d, field[5:])}): {m.architecture} takes it from {field}; "
                                 f"remove model.options.{keyword}")
        return self


def _hide_passwords(value: Any) -> Any:
    if isinstance(value, str):
        return hide_password(value)
    if isinstance(value, dict):
        return {k: _hide_passwords(v) for k, v in value.items()}
    return [_hide_passwords(v) for v in value] if isinstance(value, list) else value


# ---------------------------------------------------------------------------------------------
# Parsing, overrides, study expansion.

_QUOTE = reprlib.Repr()  # a value quoted in a message: nested and long inputs cut, never expanded whole
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother, _QUOTE.maxdict = 3, 60, 60, 4
_QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxset = 6


def quote(value: Any) -> str:
    """`repr(value)` cut to at most ~200 characters, built without expanding a large input."""
    text = _QUOTE.repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _known_fields(loc: tuple) -> list[str]:
    """Field names of the section at `loc` (for "did you mean")."""
    node: Any = ExperimentConfig
    for part in loc:
        field = getattr(node, "model_fields", {}).get(part)
        if field is None:
            return []
        node = next((a for a in (field.annotation, *get_args(field.annotation)) if hasattr(a, "model_fields")), None)
    return list(getattr(node, "model_fields", {}))


def _describe(error: dict) -> str:
    """One pydantic error as "dotted.field: what is wrong; the fix"."""
    # drop the union-member tags pydantic puts in a location ("int", "literal['auto']", ...)
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and (p in ("bool", "int", "float", "str") or "[" in p)))
    where, kind, value = ".".join(str(p)[:60] for p in loc), error["type"], error.get("input")
    ctx = error.get("ctx", {})
    if kind == "extra_forbidden":
        known = _known_fields(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1])[:60], known, n=1)
        text = f"unknown key; did you mean '{close[0]}'?" if close else f"unknown key; valid keys: {', '.join(known)}"
    elif kind == "literal_error":
        options = [o.strip(" '") for o in ctx.get("expected", "").replace(" or ", ", ").split(", ")]
        close = difflib.get_close_matches(value[:60], options, n=1) if isinstance(value, str) else []
        text = f"{quote(value)} is not one of {', '.join(options)}" + (f"; did you mean '{close[0]}'?" if close else "")
        if where == "model.architecture":
            text += "; see `actionlab models`"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        text = f"expected a whole number, got {quote(value)}"
    elif kind == "int_parsing_size":
        text = f"{quote(value)} is far too large"
    elif kind == "finite_number":
        text = f"must be a finite number, got {quote(value)}"
    elif kind in ("float_type", "float_parsing"):
        text = f"expected float, got {type(value).__name__} {quote(value)}"
    elif kind in ("bool_type", "bool_parsing"):
        text = f"expected true or false, got {quote(value)}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        text = f"must be {op} {next(iter(ctx.values()))}, got {quote(value)}"
    elif kind == "missing":
        text = "required; add it"
    elif kind == "too_short":
        text = f"expected a non-empty {'list' if isinstance(value, list) else 'mapping'}, got {quote(value)}"
    else:
        text = error["msg"].removeprefix("Value error, ")
        if not loc or text.startswith(f"{where}."):  # the message names its field itself
            return text
        if kind != "value_error":
            text += f", got {quote(value)}"
    return f"{where}: {text}"


def _validate(raw: dict, where: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        lines = list(dict.fromkeys(_describe(e) for e in err.errors()))
        raise UserError(f"{where}: " + f"\n{where}: ".join(lines)) from None


def parse_experiment(raw: dict, *, source: str = "") -> ExperimentConfig:
    """Build and check an ExperimentConfig from the experiment file's dict, section by section. No I/O.
    The runs it launches (each study variant and sweep value as a whole config) are built and
    checked once, by `orchestrator.plan.plan`."""
    return _validate({**raw, "source": source}, source or "config")


def sweep_points(cfg: ExperimentConfig) -> list[tuple[str, Any]]:
    """(dotted field, value) for every listed value of the sweep (grid / choice), and the low end of
    each range: the values a preflight can check before Tune samples the rest."""
    if not cfg.sweep:
        return []
    return [(dotted, value) for dotted, space in cfg.sweep.parameters.items()
            for value in (space.values if space.kind in ("grid", "choice") else space.values[:1])]


def _split_dotted(overrides: dict) -> dict:
    nested: dict = {}
    for dotted, value in overrides.items():
        *parents, leaf = str(dotted).split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return nested


def _merge(base: dict, update: dict) -> dict:
    """`update` over `base`, section by section; `model.options` entries merge key by key."""
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_overrides(cfg: ExperimentConfig, overrides: dict, *, where: str = "") -> ExperimentConfig:
    """A checked copy of `cfg` with dotted-field overrides applied (e.g. {'model.modality': 'flow'}).
    A schedule length given alone (optim.epochs or optim.iterations) replaces the base's other one."""
    nested = _split_dotted(overrides)
    raw = _merge(cfg.model_dump(exclude={"source"}), nested)
    given = nested.get("optim") if isinstance(nested.get("optim"), dict) else {}
    for length, other in (("epochs", "iterations"), ("iterations", "epochs")):
        if given.get(length) is not None and other not in given:
            raw["optim"][other] = None
    return _validate({**raw, "source": cfg.source}, where or cfg.source or "config")


def json_schema() -> dict:
    """The experiment file's JSON schema (for editors: `actionlab schema > experiment.schema.json`)."""
    schema = ExperimentConfig.model_json_schema()
    schema["title"] = "actionlab experiment"
    return schema
