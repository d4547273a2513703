"""The pretraining loop: fit the units once, then masked prediction with exact resume.

A run folder ``OUT`` holds:

* ``config.toml``: the resolved config; rerunning with another config is refused (run
  settings such as ``log_every``, ``device``, ``workers`` may change);
* ``units.npz``: the k-means codebooks (and CQT band statistics), fitted once on
  ``units.fit_seconds`` of seeded random crops, plain arrays (no pickle);
* ``checkpoints/step-NNNNNNNN/trainer_state.pt``: model, optimiser, scheduler, step and RNG
  state, written to a temporary folder and renamed into place, read back with
  ``torch.load(weights_only=True)`` (:mod:`audioembed.training.checkpoints`);
* ``log.jsonl``: one line every ``log_every`` steps (:mod:`audioembed.training.runlog`);
* ``model/``: the teacher, once ``max_steps`` are done (see :func:`.model.save_teacher`).

Exactness: the batch of step ``s`` is a pure function of ``(seed, s)`` (the distillation
data pipeline), the mask of step ``s`` comes from ``default_rng([seed, s])``, and dropout
uses the torch RNG state saved in each checkpoint, so N steps + resume + N steps gives the
weights of 2N uninterrupted steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AudioEmbedError
from ..training.checkpoints import (CheckpointError, checkpoint_dirs, load_latest_checkpoint, open_run_folder,
                                    run_folder_lock, save_checkpoint)
from ..training.config import ConfigError
from ..training.optim import make_optimizer
from ..training.runlog import RunLog, truncate_log
from ..registry import load_upstream, resolve_device
from .config import PretrainConfig, dump_toml, load_config
from .model import build_model, save_teacher, span_mask
from .targets import Codebook, FeatureExtractor, FeatureSpec, FrameGrid, fit_codebook, load_codebooks, save_codebooks, standardisation

UNITS_FILE = "units.npz"
MODEL_DIR = "model"
#: added to the run seed for the crops the codebooks are fitted on
FIT_SEED_OFFSET = 7919
IGNORE = -100


class PretrainError(AudioEmbedError, RuntimeError):
    """Pretraining cannot start or continue; the message says why and what to do."""


def teacher_upstream(folder: str | os.PathLike) -> str:
    """The upstream that loads a teacher folder: ``mert`` for MERT-layout configs, else ``hubert``."""
    path = Path(folder) / "config.json"
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, json.JSONDecodeError) as exc:
        raise PretrainError(f"cannot read the teacher config {path}: {exc}") from None
    if model_type == "mert_model":
        return "mert"
    if model_type == "hubert":
        return "hubert"
    raise PretrainError(f"{folder}: a '{model_type}' model; iteration 2 needs a HuBERT or MERT teacher folder")


def feature_spec(config: PretrainConfig) -> FeatureSpec:
    """The [targets] settings (FeatureSpec has the same fields) at the model's rate and frame grid."""
    return FeatureSpec(
        sample_rate=config.model.sample_rate,
        grid=FrameGrid(tuple(zip(map(int, config.arch()["conv_kernel"]), map(int, config.arch()["conv_stride"])))),
        **dataclasses.asdict(config.targets),
    )


class Targets:
    """Frame targets of a batch on the model's frames: units per codebook and CQT bands."""

    def __init__(self, config: PretrainConfig, codebooks: dict[str, Codebook], stats: dict, teacher=None):
        self.config = config
        self.codebooks = codebooks
        self.stats = stats
        self.teacher = teacher
        self.extract = FeatureExtractor(feature_spec(config))
        self.iteration = config.units.iteration
        self.cqt = config.loss.cqt_weight > 0
        self.dsp_features = (list(config.units.features) if self.iteration == 1 else []) + (["cqt"] if self.cqt else [])

    def __call__(self, audio: dict, frame_lengths: list[int], total: int, device: torch.device):
        """``({codebook: (B, T) long, IGNORE on padding}, (B, T, bands) float or None)``."""
        wavs, lengths = audio[self.config.model.sample_rate]
        batch = len(frame_lengths)
        units = {name: np.full((batch, total), IGNORE, dtype=np.int64) for name in self.codebooks}
        cqt = np.zeros((batch, total, self.config.targets.cqt_bands), dtype=np.float32) if self.cqt else None
        if self.dsp_features:
            for row in range(batch):
                n = int(lengths[row])
                feats = self.extract(wavs[row, :n].numpy(), self.dsp_features)
                t = frame_lengths[row]
                if self.iteration == 1:
                    for name in self.config.units.features:
                        units[name][row, :t] = self.codebooks[name].units(feats[name][:t])
                if cqt is not None:
                    mean, std = self.stats["cqt"]
                    cqt[row, :t] = (feats["cqt"][:t] - mean) / std
        if self.iteration == 2:
            from ..distill.align import resample_frames

            name = next(iter(self.codebooks))
            t_wavs, t_lengths = audio[self.teacher.sample_rate]
            with torch.no_grad():
                out = self.teacher(t_wavs.to(device), t_lengths.to(device))
                hidden = out.hidden_states[self.config.units.layer].float()
                hidden = resample_frames(hidden, out.lengths, torch.tensor(frame_lengths, device=hidden.device), total)
            hidden = hidden.cpu().numpy()
            for row, t in enumerate(frame_lengths):
                units[name][row, :t] = self.codebooks[name].units(hidden[row, :t])
        unit_t = {k: torch.from_numpy(v).to(device) for k, v in units.items()}
        return unit_t, (torch.from_numpy(cqt).to(device) if cqt is not None else None)


class PretrainTrainer:
    """One teacher pretraining run; see the module docstring."""

    def __init__(self, config: PretrainConfig, *, progress: bool = True, warn=None):
        from ..distill.data import read_corpus

        self.config = config
        self.progress = progress
        self.warn = warn or (lambda msg: warnings.warn(msg, stacklevel=2))
        self.output_dir = Path(config.run.output_dir)
        self.device = resolve_device(config.run.device)
        if not config.data.manifests:
            raise ConfigError(f"{config.source}: no training data: give --data or [data] manifests")
        self.items = read_corpus(config.data.manifests, config.data.default_domain, config.data.min_seconds, warn=self.warn)
        self.teacher = None
        if config.units.iteration == 2:
            folder = config.units.teacher
            self.teacher = load_upstream(teacher_upstream(folder), model=folder, device=str(self.device))
            if not 0 <= config.units.layer < self.teacher.num_layers:
                raise ConfigError(
                    f"{config.source}: [units] layer {config.units.layer} does not exist; the teacher {folder} "
                    f"has hidden states 0..{self.teacher.num_layers - 1}"
                )
        self.rates = sorted({config.model.sample_rate} | ({self.teacher.sample_rate} if self.teacher else set()))
        self.step = 0
        self.model = None
        self.targets = None

    # -- run folder ----------------------------------------------------------------------

    def _open_run_folder(self) -> bool:
        """Create the run folder or check that it holds this config; True when resuming."""
        try:
            return open_run_folder(self.output_dir, self.config.identity(), lambda path: load_config(path).identity(),
                                   dump_toml(self.config))
        except CheckpointError as exc:
            raise PretrainError(str(exc)) from None

    # -- units ---------------------------------------------------------------------------

    def _units_meta(self) -> dict:
        c = self.config
        return {"kind": c.kind, "units": c.as_dict()["units"], "targets": c.as_dict()["targets"],
                "sample_rate": c.model.sample_rate, "seed": c.run.seed, "cqt": c.loss.cqt_weight > 0}

    def _fit_crops(self):
        """Seeded random crops (of crop_seconds) until fit_seconds of audio, loaded."""
        from ..audio import AudioError
        from ..distill.data import StepSampler, load_crop

        c = self.config
        sampler = StepSampler(self.items, c.data.batch_size, c.run.seed + FIT_SEED_OFFSET, c.data.crop_seconds)
        total, step = 0.0, 0
        while total < c.units.fit_seconds:
            for crop in sampler.global_batch(step):
                if total >= c.units.fit_seconds:
                    break
                try:
                    audio = load_crop(self.items[crop.item], crop, self.rates)
                except AudioError as exc:
                    self.warn(f"k-means fitting: skipping {exc}")
                    continue
                total += crop.duration
                yield audio
            step += 1
            if step > 100_000:
                raise PretrainError("could not load enough audio to fit the codebooks")

    def fit_units(self) -> tuple[dict[str, Codebook], dict]:
        """Fit (or read back) the codebooks and target statistics of this run."""
        c = self.config
        path = self.output_dir / UNITS_FILE
        if path.is_file():
            books, stats, meta = load_codebooks(path)
            if meta != json.loads(json.dumps(self._units_meta())):
                raise PretrainError(f"{path} was fitted with other settings; delete it (or the run folder) to refit")
            return books, stats
        extract = FeatureExtractor(feature_spec(c))
        cqt = c.loss.cqt_weight > 0
        dsp = (list(c.units.features) if c.units.iteration == 1 else []) + (["cqt"] if cqt else [])
        collected: dict[str, list[np.ndarray]] = {name: [] for name in dsp}
        layer_feats: list[np.ndarray] = []
        started = time.monotonic()
        for audio in self._fit_crops():
            if dsp:
                feats = extract(audio[c.model.sample_rate], dsp)
                for name in dsp:
                    collected[name].append(feats[name])
            if self.teacher is not None:
                wav = torch.from_numpy(audio[self.teacher.sample_rate])[None].to(self.device)
                with torch.no_grad():
                    out = self.teacher(wav, torch.tensor([wav.shape[1]], device=self.device))
                layer_feats.append(out.hidden_states[c.units.layer][0].float().cpu().numpy())
        books = []
        seed = c.run.seed
        if c.units.iteration == 1:
            for name in c.units.features:
                books.append(fit_codebook(name, np.concatenate(collected[name]), c.units.k, seed))
        else:
            books.append(fit_codebook(c.unit_features[0], np.concatenate(layer_feats), c.units.k, seed))
        stats = {"cqt": standardisation(np.concatenate(collected["cqt"]))} if cqt else {}
        save_codebooks(path, books, stats, self._units_meta())
        if self.progress:
            print(f"fitted {len(books)} codebook(s) of {c.units.k} units in {time.monotonic() - started:.1f} s", file=sys.stderr)
        return {b.name: b for b in books}, stats

    # -- model and state -----------------------------------------------------------------

    def build(self) -> None:
        c = self.config
        books, stats = self.fit_units()
        self.targets = Targets(c, books, stats, self.teacher)
        self.model = build_model(
            c.arch(), {name: b.size for name, b in books.items()}, seed=c.run.seed, embed_dim=c.loss.embed_dim,
            temperature=c.loss.temperature, cqt_bands=c.targets.cqt_bands if c.loss.cqt_weight > 0 else 0,
            normalize=c.model.normalize, mask_length=c.mask.length, mask_min=c.mask.min_masks,
        ).to(self.device)
        self.optimizer, self.scheduler = make_optimizer(c.optim, self.model)

    def state_dict(self) -> dict:
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng_cpu"])
        if state.get("rng_cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)

    def _checkpoint(self) -> Path:
        return save_checkpoint(self.output_dir, self.step, self.state_dict(), self.config.run.keep_checkpoints)

    # -- one step ------------------------------------------------------------------------

    def losses(self, batch, step: int) -> tuple[torch.Tensor, dict]:
        """The objective of one batch and its terms (masked CE and accuracy per codebook, CQT MSE)."""
        c = self.config
        wavs, lengths = batch.audio[c.model.sample_rate]
        total = self.model.grid.num_frames(wavs.shape[1])
        frame_lengths = self.model.frame_lengths(lengths)
        rng = np.random.default_rng([c.run.seed, int(step)])
        mask = torch.from_numpy(span_mask(frame_lengths, total, c.mask.prob, c.mask.length, c.mask.min_masks, rng)).to(self.device)
        units, cqt_target = self.targets(batch.audio, frame_lengths, total, self.device)
        logits, cqt = self.model(wavs.to(self.device), lengths.to(self.device), mask)
        valid = torch.arange(total, device=self.device)[None, :] < torch.tensor(frame_lengths, device=self.device)[:, None]
        masked, unmasked = mask & valid, valid & ~mask
        loss = torch.zeros((), device=self.device)
        terms: dict = {}
        for name, lg in logits.items():
            target = units[name]
            ce_m = F.cross_entropy(lg[masked], target[masked]) if masked.any() else lg.sum() * 0
            loss = loss + ce_m
            terms[f"ce_masked/{name}"] = float(ce_m.detach())
            with torch.no_grad():
                terms[f"acc_masked/{name}"] = float((lg[masked].argmax(-1) == target[masked]).float().mean()) if masked.any() else float("nan")
            if c.loss.unmasked_weight > 0 and unmasked.any():
                ce_u = F.cross_entropy(lg[unmasked], target[unmasked])
                loss = loss + c.loss.unmasked_weight * ce_u
                terms[f"ce_unmasked/{name}"] = float(ce_u.detach())
        if cqt is not None:
            mse = F.mse_loss(cqt[masked], cqt_target[masked]) if masked.any() else cqt.sum() * 0
            loss = loss + c.loss.cqt_weight * mse
            terms["cqt_mse"] = float(mse.detach())
        terms["masked_fraction"] = float(masked.sum()) / max(1, int(valid.sum()))
        return loss, terms

    def train_step(self, batch) -> tuple[float, dict, float]:
        self.model.train()
        loss, terms = self.losses(batch, self.step)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return float(loss.detach()), terms, float(grad_norm)

    # -- run -----------------------------------------------------------------------------

    def info(self) -> dict:
        c = self.config
        hours = sum(item.duration for item in self.items) / 3600
        return {
            "kind": c.kind,
            "objective": "masked prediction of k-means units" + (" + CQT-band reconstruction" if c.loss.cqt_weight > 0 else ""),
            "units": {"iteration": c.units.iteration, "codebooks": c.unit_features, "k": c.units.k,
                      "teacher": c.units.teacher or None, "layer": c.units.layer if c.units.iteration == 2 else None},
            "steps": self.step,
            "sample_rate": c.model.sample_rate,
            "data": {"items": len(self.items), "hours": round(hours, 4)},
            "config": c.as_dict(),
        }

    def save_model(self) -> Path:
        c = self.config
        return save_teacher(self.model.encoder, self.output_dir / MODEL_DIR, kind=c.kind, sample_rate=c.model.sample_rate,
                            normalize=c.model.normalize, info=self.info())

    def run(self, until_step: int | None = None) -> Path:
        """Train (resuming from the last checkpoint) to ``max_steps`` or ``until_step``.

        Returns ``OUT/model`` when ``max_steps`` are done, else the checkpoint it stopped at.
        """
        try:  # one process per run folder: a second would write checkpoints over this one's
            with run_folder_lock(self.output_dir):
                return self._run(until_step)
        except CheckpointError as exc:
            raise PretrainError(str(exc)) from None

    def _run(self, until_step: int | None = None) -> Path:
        """:meth:`run` with the run folder locked."""
        from ..distill.data import BatchLoader, StepSampler

        c = self.config
        resuming = self._open_run_folder()
        try:
            resume = load_latest_checkpoint(self.output_dir, self.warn) if resuming else None
        except CheckpointError as exc:
            raise PretrainError(str(exc)) from None
        self.build()
        if resume is not None:
            self.load_state_dict(resume[1])
            truncate_log(self.output_dir, self.step)
            if self.progress:
                print(f"resuming {self.output_dir} from step {self.step}", file=sys.stderr)
        else:
            torch.manual_seed(c.run.seed * 1000 + 1)
        stop = min(c.optim.max_steps, until_step) if until_step is not None else c.optim.max_steps
        sampler = StepSampler(self.items, c.data.batch_size, c.run.seed, c.data.crop_seconds)
        loader = BatchLoader(self.items, sampler, self.rates, start_step=self.step, max_steps=stop,
                             workers=c.run.workers, warn=self.warn)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=stop, initial=self.step, unit="step", desc=f"pretrain {c.kind}", dynamic_ncols=True)
        log = RunLog(self.output_dir)
        started = time.monotonic()
        first_step = self.step
        audio_seconds = 0.0
        try:
            for micro_batches, _, step_seconds in loader:
                loss, terms, grad_norm = self.train_step(micro_batches[0])
                audio_seconds += step_seconds
                if self.step % c.run.log_every == 0 or self.step == stop:
                    elapsed = time.monotonic() - started
                    record = {
                        "step": self.step,
                        "loss": loss,
                        **terms,
                        "lr": self.scheduler.get_last_lr()[0],
                        "grad_norm": grad_norm,
                        "steps_per_second": (self.step - first_step) / elapsed if elapsed > 0 else None,
                        "audio_seconds_per_second": audio_seconds / elapsed if elapsed > 0 else None,
                    }
                    log.write(record)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.3f}")
                if bar is not None:
                    bar.update(1)
                if not math.isfinite(loss):
                    raise PretrainError(f"the loss became {loss} at step {self.step}; lower optim.lr or check the data")
                if self.step % c.run.checkpoint_every == 0 and self.step < stop:
                    self._checkpoint()
        finally:
            loader.close()
            log.close()
            if bar is not None:
                bar.close()
        self._checkpoint()
        if self.step >= c.optim.max_steps:
            return self.save_model()
        return checkpoint_dirs(self.output_dir)[-1]


def pretrain(config: PretrainConfig, until_step: int | None = None, progress: bool = False) -> Path:
    """Run (or resume) a pretraining; returns ``OUT/model`` or the last checkpoint."""
    return PretrainTrainer(config, progress=progress).run(until_step=until_step)
