"""The training step at GPU speed: ``torch.compile`` of the network and the optimizer's multi-tensor
update (docs/design.md, Training). bf16 autocast and channels_last stay in the loop.

Where the compile goes. The network is compiled in place (``nn.Module.compile``) right after it is
built, before any DistributedDataParallel wrap, as torch's guide "Where to apply torch.compile?"
advises (DDP and FSDP wrappers trace poorly; compile the inner module). DDP then wraps the compiled
module; when its forward runs inside DDP's, Dynamo sees the active DDP module and splits the graph at
DDP's gradient-bucket boundaries (``torch._dynamo.config.optimize_ddp``), so the all-reduce of one
bucket still overlaps the backward of the next. In place also keeps the state dict's keys plain:
``torch.compile(model)`` would return a wrapper whose keys carry an ``_orig_mod.`` prefix, and a
checkpoint written from it would not load into a plain ``PoseNet``.

May import: torch.
"""

from __future__ import annotations

import inspect
import logging

import torch

log = logging.getLogger("pose3d.train")


def compile_model(model: torch.nn.Module, enabled: bool, backend: str = "inductor") -> torch.nn.Module:
    """Compile ``model``'s forward in place when ``enabled`` (``train.compile``); returns ``model``.
    ``backend``: torch.compile's; tests use "aot_eager" (Dynamo's graphs and AOTAutograd's forward /
    backward split without inductor's code generation, which takes minutes on a small CPU).

    The first call of each new kind (train / eval mode, with or without the depth regressor, a
    parameter that starts or stops training) builds a graph: on 2 CPU cores about 1 minute for the
    forward of a small network and 2.5 minutes for its training step; later calls reuse it. Known
    limit (torch 2.13, CPU only): with deterministic algorithms off (``train.deterministic: false``),
    inductor's C++ backend fails (an InductorError) on the backward of the nearest upsampling from a
    1 x 1 map, which the hourglass does at 16 px heatmaps (the demo network); with them on (the
    default) that backward is lowered differently and compiles, and 32 px and more (the paper's 64)
    compile either way. Measured on 3 December 2026 with the demo network, batch 2."""
    if enabled:
        model.compile(backend=backend)
        log.info("model compiled with torch.compile (%s; graphs are built at their first call)", backend)
    return model


def is_compiled(model: torch.nn.Module) -> bool:
    """Whether ``model`` was compiled in place (``nn.Module.compile``)."""
    return getattr(model, "_compiled_call_impl", None) is not None


def optimizer_flags(optimizer_class: type[torch.optim.Optimizer], device: torch.device) -> dict[str, bool]:
    """Keyword flags for the fastest update torch offers ``optimizer_class`` on ``device``: one fused
    kernel per step (``fused=True``) on CUDA where the class has it (Adam; RMSprop has none), else the
    multi-tensor ``foreach=True`` (one launch per group of tensors rather than per tensor). The
    update's arithmetic is the same as the per-tensor loop's, up to float rounding.

    A resumed optimizer takes the flags saved in its checkpoint (``load_state_dict`` restores each
    parameter group's settings)."""
    if device.type == "cuda" and "fused" in inspect.signature(optimizer_class).parameters:
        return {"fused": True}
    return {"foreach": True}
