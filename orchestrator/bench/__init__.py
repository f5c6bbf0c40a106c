"""The benchmarks behind `actionlab bench ...`, each timing the code users run (the Dataset, the
loader, the training loop's own step), never a copy of it. Imports nothing: `actionlab --help` builds
`bench gpu`'s options from `gpu` without importing torch.

    cpu.py           decode, train (one Ray Train worker vs plain PyTorch), flow (cache formats), input
    gpu.py           `actionlab bench gpu` (== `python -m orchestrator.bench.gpu`): its options, sections and
                     budgets, one child process per section, the transcript and the summary
    gpu_sections.py  what each of those child processes measures (facts, ddp, loop, train, loader, flow)
    synthetic.py     inputs they share: frames that compress like footage, clips and batches without a video
"""
