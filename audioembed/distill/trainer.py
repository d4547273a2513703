"""The distillation loop: one student, any number of teachers, exact resume, data parallel.

Design decisions that make the guarantees hold:

* **Stateless data order.** The global batch of step ``s`` is a pure function of
  ``(seed, s)`` (:class:`~.data.StepSampler`), so resuming needs only the step number, and
  every data-parallel rank computes the same global batch and takes its slice.
* **Per-sample averaging with a global normaliser.** Each sample's loss is a mean over its
  own frames; a teacher's loss is the mean over the samples it supervises in the *global*
  batch (a count every rank knows). Summed over micro-batches and ranks this is exactly the
  single-process objective, so 2 processes x B/2 give the same gradients as 1 x B.
* **Checkpoints hold everything that changes**: weights, optimiser, scheduler, grad
  scaler, step and RNG states (dropout). N steps + resume + N steps == 2N steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from ..errors import AudioEmbedError
from ..models.hf_encoder import load_pretrained, wrap_hf_model
from ..models.student_folder import HEADS_FILE, META_FILE, read_student_metadata, save_student
from ..registry import resolve_device
from ..training.checkpoints import (CheckpointError, checkpoint_dirs, load_latest_checkpoint, open_run_folder,
                                    run_folder_lock, save_checkpoint)
from ..training.config import ConfigError
from ..training.optim import make_optimizer
from ..training.runlog import RunLog, truncate_log
from ..upstream import Upstream, UpstreamError
from .align import resample_frames
from .config import DistillConfig, dump_toml
from .teachers import Teacher, load_teachers
from .heads import PredictionHeads
from .loss import combine, per_sample_terms
from .pcgrad import pcgrad_backward
from .student import InitReport, StudentError, average_state_dicts, copy_fitting, student_config, build_student, weights_fingerprint

class DistillError(AudioEmbedError, RuntimeError):
    """Training cannot start or continue; the message says why and what to do."""


# --------------------------------------------------------------------------------------
# distributed helpers (a single process is world 1, rank 0)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_world() -> World:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def _all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------


def _hf_model(teacher: Teacher):
    model = getattr(teacher.upstream, "model", None)
    if model is None or not hasattr(getattr(model, "config", None), "conv_stride"):
        raise StudentError(
            f"teacher '{teacher.spec.name}' ({teacher.spec.upstream}) has no HuBERT-like weights to initialise a student from"
        )
    return model


def init_student(config: DistillConfig, teachers: list[Teacher]):
    """The student ``HubertModel`` at step 0 and a report of how it was initialised."""
    from transformers import HubertModel

    init = config.student.init
    arch = dict(config.student.arch)
    seed = config.run.seed
    by_name = {t.spec.name: t for t in teachers}
    if init == "random":
        model = build_student(student_config(arch), seed)
        return model, InitReport("random")
    if init.startswith("teacher:"):
        teacher = by_name[init[len("teacher:"):]]
        source = _hf_model(teacher)
        model = build_student(student_config(arch, source.config), seed)
        copied, _ = copy_fitting(model, source.state_dict())
        report = InitReport("teacher", [f"{teacher.spec.upstream}:{teacher.spec.model}"], len(copied), len(model.state_dict()))
        return model, report
    if init.startswith("average:"):
        a, b = (by_name[n.strip()] for n in init[len("average:"):].split(","))
        ma, mb = _hf_model(a), _hf_model(b)
        from .student import architecture

        diff = [k for k, v in architecture(ma.config).items() if k != "num_hidden_layers" and architecture(mb.config)[k] != v]
        if diff:
            raise StudentError(f"cannot average teachers '{a.spec.name}' and '{b.spec.name}': they differ in {', '.join(diff)}")
        model = build_student(student_config(arch, ma.config), seed)
        copied, _ = copy_fitting(model, average_state_dicts(ma.state_dict(), mb.state_dict()))
        sources = [f"{t.spec.upstream}:{t.spec.model}" for t in (a, b)]
        return model, InitReport("average", sources, len(copied), len(model.state_dict()))
    # a student folder, e.g. the shared theta_0 of task-arithmetic students
    folder = Path(init)
    try:
        read_student_metadata(folder)
        model = load_pretrained(HubertModel, folder, dtype=torch.float32)
    except UpstreamError as exc:
        raise StudentError(f"[student] init: {exc}") from None
    if arch:
        want = student_config(arch, model.config)
        from .student import architecture

        diff = [k for k, v in architecture(want).items() if architecture(model.config)[k] != v]
        if diff:
            raise StudentError(f"[student] arch overrides {', '.join(diff)} conflict with the init folder {folder}")
    for key, value in dict(apply_spec_augment=False, mask_time_prob=0.0, mask_feature_prob=0.0, layerdrop=0.0).items():
        setattr(model.config, key, value)
    return model, InitReport("folder", [str(folder)], len(model.state_dict()), len(model.state_dict()))


class Distiller(nn.Module):
    """Student encoder + prediction heads: the only trainable module."""

    def __init__(self, student: Upstream, heads: PredictionHeads):
        super().__init__()
        self.student = student
        self.heads = heads

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        # Upstream.train() pins upstreams to eval; the student is the one we do train.
        self.student.model.train(mode)
        return self

    def forward(self, wavs: torch.Tensor, lengths: torch.Tensor):
        out = self.student(wavs, lengths)
        last = out.hidden_states[-1]
        return self.heads(last, out.lengths), out.lengths


def build_distiller(config: DistillConfig, teachers: list[Teacher]) -> tuple[Distiller, InitReport, str]:
    model, report = init_student(config, teachers)
    fingerprint = weights_fingerprint(model)
    student = wrap_hf_model(model, sample_rate=config.student.sample_rate, normalize=config.student.normalize, source=None, name="student")
    head_spec = {t.spec.name: (t.hidden_size, len(t.layers)) for t in teachers}
    torch.manual_seed(config.run.seed + 1)
    heads = PredictionHeads(student.hidden_size, head_spec, config.student.head)
    return Distiller(student, heads), report, fingerprint


# --------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------


@dataclass
class StepTerms:
    """Global sums of one optimiser step, for the log."""

    loss: float
    per_teacher: dict[str, dict]


class Trainer:
    """Runs one distillation; see the module docstring for the guarantees."""

    def __init__(self, config: DistillConfig, *, progress: bool = True, warn=None):
        from .data import read_corpus

        self.config = config
        self.world = init_world()
        self.progress = progress and self.world.is_main
        self.warn = warn or (lambda msg: warnings.warn(msg, stacklevel=2))
        self.output_dir = Path(config.run.output_dir)
        if self.world.size > 1 and torch.cuda.is_available() and config.run.device in ("auto", "cuda"):
            self.device = torch.device("cuda", self.world.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = resolve_device(config.run.device)
        per_step = self.world.size * config.optim.accumulate
        if config.data.batch_size % per_step:
            raise ConfigError(
                f"{config.source}: [data] batch_size {config.data.batch_size} must be divisible by "
                f"processes x accumulate = {self.world.size} x {config.optim.accumulate}"
            )
        if not config.data.manifests:
            raise ConfigError(f"{config.source}: [data] manifests is empty: list the training corpus manifests or folders")
        self.items = read_corpus(config.data.manifests, config.data.default_domain, config.data.min_seconds, warn=self.warn)
        self.domains = sorted({item.domain for item in self.items})

        self.cache = None
        teachers = load_teachers(config, self.device)
        self.augment = None
        if config.data.augment.active:
            from .augment import Augmenter

            self.augment = Augmenter(config.data.augment, config.run.seed, warn=self.warn)
            self.augment.check_rates([config.student.sample_rate], "the student")
            for t in teachers:
                self.augment.check_rates([t.sample_rate], f"teacher '{t.spec.name}'")
        # The student may be initialised from a teacher's weights, so build it before the
        # teachers are dropped for cached targets.
        self.distiller, self.init_report, self.init_fingerprint = build_distiller(config, teachers)
        if config.data.cache_dir:
            from .cache import TeacherCache

            self.cache = TeacherCache(
                config.data.cache_dir, [(t.spec, t.upstream) for t in teachers],
                augment=self.augment.record() if self.augment is not None else None,
            )
            for t in teachers:  # cached targets: the teachers' weights are no longer needed
                t.upstream = None
        self.teachers = teachers
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

        self.distiller.to(self.device)
        self.optimizer, self.scheduler = make_optimizer(config.optim, self.distiller)
        precision = config.optim.precision if self.device.type == "cuda" else "fp32"
        if precision != config.optim.precision and self.world.is_main:
            self.warn(f"precision {config.optim.precision} needs CUDA; training in fp32 on {self.device}")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.step = 0
        self.model = self.distiller
        if self.world.size > 1 and not config.loss.pcgrad:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.distiller, device_ids=ids)
        self.pcgrad_generator = torch.Generator().manual_seed(config.run.seed + 7)
        #: teacher name -> (mean (K, D), scale (K, 1)) when loss.normalize_targets; set in run()
        self.target_stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # -- data --------------------------------------------------------------------------

    def _sampler(self):
        from .data import StepSampler

        crops = self.cache.crops(self.items) if self.cache is not None else None
        d = self.config.data
        return StepSampler(
            self.items, d.batch_size, self.config.run.seed, d.crop_seconds, d.domain_weights or None, crops=crops
        )

    def _rates(self) -> list[int]:
        rates = {self.config.student.sample_rate}
        if self.cache is None:
            rates |= {t.sample_rate for t in self.teachers}
        return sorted(rates)

    # -- state -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "model": self.distiller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "pcgrad_rng": self.pcgrad_generator.get_state(),
            "init_fingerprint": self.init_fingerprint,
            "init_report": self.init_report.as_dict(),
            "world_size": self.world.size,
            "target_stats": {name: [m.cpu(), sc.cpu()] for name, (m, sc) in self.target_stats.items()},
        }
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return state

    def load_state_dict(self, state: dict) -> None:
        self.distiller.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.init_fingerprint = state["init_fingerprint"]
        self.pcgrad_generator.set_state(state["pcgrad_rng"])
        self.target_stats = {name: (m.to(self.device), sc.to(self.device))
                             for name, (m, sc) in (state.get("target_stats") or {}).items()}
        if state.get("world_size", 1) == self.world.size:
            torch.set_rng_state(state["rng_cpu"])
            if state.get("rng_cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        elif self.world.is_main:
            self.warn(
                f"resuming with {self.world.size} processes from a checkpoint written by {state.get('world_size')}: "
                "data order is unchanged, dropout randomness is not"
            )

    def _open_run_folder(self) -> bool:
        """Create the run folder or check that it holds this config; True when resuming."""
        from .config import load_config

        try:
            return open_run_folder(
                self.output_dir, self.config.identity(), lambda path: load_config(path).identity(),
                dump_toml(self.config), write=self.world.is_main,
            )
        except CheckpointError as exc:
            raise DistillError(str(exc)) from None

    # -- one optimiser step ------------------------------------------------------------

    def _raw_targets(self, teacher: Teacher, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, K, T, D)`` targets at the teacher's frame rate and their valid frame counts."""
        if self.cache is not None:
            keys = [crop.key(self.items) for crop in batch.crops]
            targets, lengths = self.cache.targets(teacher.spec.name, keys)
        else:
            wavs, wav_lengths = batch.audio[teacher.sample_rate]
            with torch.no_grad(), self._autocast():
                out = teacher.upstream(wavs.to(self.device), wav_lengths.to(self.device))
            targets = torch.stack([out.hidden_states[i] for i in teacher.layers], dim=1).float()
            lengths = out.lengths
        return targets.to(self.device), lengths.to(self.device)

    def _targets(self, teacher: Teacher, batch, student_lengths: torch.Tensor, student_frames: int) -> torch.Tensor:
        targets, lengths = self._raw_targets(teacher, batch)
        stats = self.target_stats.get(teacher.spec.name)
        if stats is not None:  # padding frames change too, but the loss never reads them
            mean, scale = stats
            targets = (targets.float() - mean[None, :, None, :]) / scale[None, :, :, None]
        return resample_frames(targets, lengths, student_lengths, student_frames)

    def estimate_target_stats(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per teacher, over the valid frames of the first ``loss.target_stats_steps`` global
        batches (the same crops every rank and every resumed run sees): the mean of each target
        dimension, ``(K, D)``, and the RMS of each centred target layer, ``(K, 1)``.

        One scale per layer, not per dimension: a near-constant dimension (a posterior that is
        almost always 0) divided by its own tiny deviation would turn rare spikes into outliers
        that dominate the L1 term."""
        from .data import BatchLoader

        steps = self.config.loss.target_stats_steps
        loader = BatchLoader(self.items, self._sampler(), self._rates(), start_step=0, max_steps=steps,
                             workers=0, warn=self.warn, augment=self.augment)
        sums: dict[str, list[torch.Tensor]] = {}
        for step in range(steps):
            for batch in loader.load_step(step).micro_batches:
                for teacher in self.teachers:
                    targets, lengths = self._raw_targets(teacher, batch)
                    targets = targets.double()
                    valid = (torch.arange(targets.shape[2], device=targets.device)[None, :] < lengths[:, None])
                    x = targets * valid[:, None, :, None]
                    frames = valid.sum().double()
                    acc = sums.setdefault(teacher.spec.name, [0.0, 0.0, 0.0])
                    acc[0] = acc[0] + x.sum(dim=(0, 2))  # (K, D)
                    acc[1] = acc[1] + (x * x).sum(dim=(0, 2))
                    acc[2] = acc[2] + frames
        stats = {}
        for name, (total, squares, frames) in sums.items():
            frames = max(float(frames), 1.0)
            mean = total / frames
            variance = (squares / frames - mean * mean).clamp(min=0.0)
            scale = variance.mean(dim=-1, keepdim=True).sqrt().clamp(min=1e-6)
            stats[name] = (mean.float().to(self.device), scale.float().to(self.device))
        return stats

    def _supervised(self, teacher: Teacher, domains: list[str]) -> torch.Tensor:
        if not self.config.loss.domain_separated or not teacher.spec.domains:
            return torch.ones(len(domains), device=self.device)
        return torch.tensor([float(d in teacher.spec.domains) for d in domains], device=self.device)

    def _losses(self, batch, global_counts: dict[str, int], sums: torch.Tensor, k_max: int) -> list[torch.Tensor]:
        """Per-teacher losses of one micro-batch, scaled so that summing them over micro-batches
        and ranks gives the global-batch objective; adds the log terms to ``sums``."""
        cfg = self.config
        wavs, lengths = batch.audio[cfg.student.sample_rate]
        wavs, lengths = wavs.to(self.device), lengths.to(self.device)
        with self._autocast():
            preds, s_lengths = self.model(wavs, lengths)
        frames = next(iter(preds.values())).shape[2]
        losses = []
        for ti, teacher in enumerate(self.teachers):
            target = self._targets(teacher, batch, s_lengths, frames)
            l1, cos = per_sample_terms(preds[teacher.spec.name], target, s_lengths)
            per_sample = combine(l1, cos, cfg.loss.cos_weight)
            mask = self._supervised(teacher, batch.domains)
            count = global_counts[teacher.spec.name]
            scale = teacher.spec.weight * self.world.size / count if count else 0.0
            losses.append((per_sample * mask).sum() * scale)
            with torch.no_grad():
                k = len(teacher.layers)
                sums[ti, 0] += (per_sample * mask).sum().double()
                sums[ti, 1 : 1 + k] += (l1 * mask[:, None]).sum(0).double()
                sums[ti, 1 + k_max : 1 + k_max + k] += (cos * mask[:, None]).sum(0).double()
        return losses

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _new_sums(self) -> tuple[torch.Tensor, int]:
        k_max = max(len(t.layers) for t in self.teachers)
        return torch.zeros(len(self.teachers), 1 + 2 * k_max, device=self.device, dtype=torch.float64), k_max

    def _terms(self, sums: torch.Tensor, k_max: int, global_counts: dict[str, int]) -> StepTerms:
        per_teacher = {}
        total = 0.0
        for ti, teacher in enumerate(self.teachers):
            n = global_counts[teacher.spec.name]
            k = len(teacher.layers)
            mean = (sums[ti] / n).tolist() if n else [float("nan")] * sums.shape[1]
            per_teacher[teacher.spec.name] = {
                "loss": mean[0],
                "samples": n,
                "l1": dict(zip(map(str, teacher.layers), mean[1 : 1 + k])),
                "cos": dict(zip(map(str, teacher.layers), mean[1 + k_max : 1 + k_max + k])),
            }
            if n:
                total += teacher.spec.weight * mean[0]
        return StepTerms(total, per_teacher)

    @torch.no_grad()
    def evaluate(self, micro_batches: list, domain_counts: dict[str, int]) -> StepTerms:
        """The objective on batches without training (eval mode: no dropout)."""
        self.distiller.eval()
        sums, k_max = self._new_sums()
        counts = self._teacher_counts(domain_counts)
        for batch in micro_batches:
            self._losses(batch, counts, sums, k_max)
        _all_reduce_sum(sums, self.world)
        return self._terms(sums, k_max, counts)

    def train_step(self, micro_batches: list, global_counts: dict[str, int]) -> StepTerms:
        """Forward/backward over this rank's micro-batches, then one optimiser step."""
        cfg = self.config
        self.model.train()
        sums, k_max = self._new_sums()
        for index, batch in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            sync = self.model.no_sync() if (self.model is not self.distiller and not last) else contextlib.nullcontext()
            with sync:
                losses = self._losses(batch, global_counts, sums, k_max)
                if cfg.loss.pcgrad and len(losses) > 1:
                    params = [p for p in self.distiller.parameters() if p.requires_grad]
                    pcgrad_backward([self.scaler.scale(loss) for loss in losses], params, self.pcgrad_generator)
                else:
                    self.scaler.scale(torch.stack(losses).sum()).backward()
        if cfg.loss.pcgrad and self.world.size > 1:
            for p in self.distiller.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad /= self.world.size
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.distiller.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

        _all_reduce_sum(sums, self.world)
        self._grad_norm = float(grad_norm)
        return self._terms(sums, k_max, global_counts)

    # -- run ---------------------------------------------------------------------------

    def save_student(self, folder: Path, *, with_heads: bool = True) -> Path:
        from safetensors.torch import save_file

        meta = self.student_metadata()
        save_student(self.distiller.student, folder, sample_rate=self.config.student.sample_rate,
                     normalize=self.config.student.normalize, metadata=meta)
        if with_heads:
            heads = {k: v.detach().cpu().contiguous() for k, v in self.distiller.heads.state_dict().items()}
            save_file(heads, str(folder / HEADS_FILE), metadata={"design": json.dumps(self.distiller.heads.design)})
        return folder

    def student_metadata(self) -> dict:
        cfg = self.config
        hours: dict[str, float] = {}
        for item in self.items:
            hours[item.domain] = hours.get(item.domain, 0.0) + item.duration / 3600
        return {
            "teachers": [t.describe() for t in self.teachers],
            "target_layers": {t.spec.name: t.layers for t in self.teachers},
            "init_fingerprint": self.init_fingerprint,
            "init": self.init_report.as_dict(),
            "heads": self.distiller.heads.design,
            "training": {
                "steps": self.step,
                "max_steps": cfg.optim.max_steps,
                "batch_size": cfg.data.batch_size,
                "crop_seconds": cfg.data.crop_seconds,
                "cached_targets": bool(cfg.data.cache_dir),
                "domain_separated": cfg.loss.domain_separated,
                "domain_weights": cfg.data.domain_weights,
                "pcgrad": cfg.loss.pcgrad,
                "normalize_targets": cfg.loss.normalize_targets,
                "seed": cfg.run.seed,
                "augment": self.augment.record() if self.augment is not None else None,
                "data": {"items": len(self.items), "hours": {d: round(h, 4) for d, h in sorted(hours.items())}},
            },
        }

    def run(self, until_step: int | None = None, init_only: bool = False) -> Path:
        """Train (resuming from the last checkpoint) to ``max_steps`` or ``until_step``.

        Returns the folder of the final student, or of the last checkpoint when stopped early.
        """
        try:  # one process per run folder: a second would write checkpoints over this one's
            with run_folder_lock(self.output_dir, enabled=self.world.is_main):
                return self._run(until_step, init_only)
        except CheckpointError as exc:
            raise DistillError(str(exc)) from None

    def _run(self, until_step: int | None = None, init_only: bool = False) -> Path:
        """:meth:`run` with the run folder locked."""
        cfg = self.config
        resuming = self._open_run_folder()
        try:
            resume = load_latest_checkpoint(self.output_dir, self.warn if self.world.is_main else lambda _: None) if resuming else None
        except CheckpointError as exc:
            raise DistillError(str(exc)) from None
        if self.world.is_main and not (self.output_dir / "init" / META_FILE).is_file():
            if resume is None:  # theta_0, the base of task vectors
                self.save_student(self.output_dir / "init", with_heads=False)
        if init_only:
            self._barrier()
            return self.output_dir / "init"
        if resume is not None:
            self.load_state_dict(resume[1])
            if self.world.is_main:
                truncate_log(self.output_dir, self.step)
                print(f"resuming {self.output_dir} from step {self.step}", file=sys.stderr)
        else:
            torch.manual_seed(cfg.run.seed * 1000 + self.world.rank)
        if cfg.loss.normalize_targets and not self.target_stats:
            self.target_stats = self.estimate_target_stats()
        stop = min(cfg.optim.max_steps, until_step) if until_step is not None else cfg.optim.max_steps
        logger = _Logger(self.output_dir, self.world.is_main, cfg.run.tensorboard)
        from .data import BatchLoader

        sampler = self._sampler()
        loader = BatchLoader(
            self.items, sampler, self._rates(), start_step=self.step, max_steps=stop,
            rank=self.world.rank, world=self.world.size, accumulate=cfg.optim.accumulate,
            workers=cfg.run.workers, warn=self.warn, augment=self.augment,
        )
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=stop, initial=self.step, unit="step", desc="distill", dynamic_ncols=True)
        started = time.monotonic()
        audio_seconds = 0.0
        try:
            for micro_batches, global_counts, step_seconds in loader:
                terms = self.train_step(micro_batches, self._teacher_counts(global_counts))
                audio_seconds += step_seconds
                if self.step % cfg.run.log_every == 0 or self.step == stop:
                    elapsed = time.monotonic() - started
                    record = {
                        "step": self.step,
                        "loss": terms.loss,
                        "lr": self.scheduler.get_last_lr()[0],
                        "grad_norm": self._grad_norm,
                        "audio_seconds_per_second": audio_seconds / elapsed if elapsed > 0 else None,
                        "teachers": terms.per_teacher,
                    }
                    logger.log(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{terms.loss:.4f}")
                if bar is not None:
                    bar.update(1)
                if self.step % cfg.run.checkpoint_every == 0 and self.step < stop:
                    self._checkpoint()
        finally:
            loader.close()
            logger.close()
            if bar is not None:
                bar.close()
        if self.step >= cfg.optim.max_steps:
            self._checkpoint()  # every rank: it ends in a barrier
            if self.world.is_main:
                self.save_student(self.output_dir / "student")
            self._barrier()
            return self.output_dir / "student"
        self._checkpoint()
        return checkpoint_dirs(self.output_dir)[-1]

    def _teacher_counts(self, domain_counts: dict[str, int]) -> dict[str, int]:
        total = sum(domain_counts.values())
        out = {}
        for t in self.teachers:
            if self.config.loss.domain_separated and t.spec.domains:
                out[t.spec.name] = sum(n for d, n in domain_counts.items() if d in t.spec.domains)
            else:
                out[t.spec.name] = total
        return out

    def _checkpoint(self) -> None:
        state = self.state_dict()
        if self.world.is_main:
            save_checkpoint(self.output_dir, self.step, state, self.config.run.keep_checkpoints)
        self._barrier()

    def _barrier(self) -> None:
        if self.world.size > 1:
            dist.barrier()


class _Logger:
    """JSON lines (one per logged step) and, optionally, TensorBoard scalars; rank 0 only."""

    def __init__(self, output_dir: Path, active: bool, tensorboard: bool):
        self.active = active
        self.log_file = RunLog(output_dir, active)
        self.tb = None
        if active and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise DistillError("run.tensorboard = true needs the tensorboard package: pip install tensorboard") from None
            self.tb = SummaryWriter(str(output_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.active:
            return
        self.log_file.write(record)
        if self.tb is not None:
            step = record["step"]
            self.tb.add_scalar("loss", record["loss"], step)
            self.tb.add_scalar("lr", record["lr"], step)
            for name, t in record["teachers"].items():
                for kind in ("l1", "cos"):
                    for layer, value in t[kind].items():
                        if not math.isnan(value):
                            self.tb.add_scalar(f"{name}/{kind}/layer{layer}", value, step)

    def close(self) -> None:
        self.log_file.close()
        if self.tb is not None:
            self.tb.close()
