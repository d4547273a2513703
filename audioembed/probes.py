"""Light heads trained on frozen, layer-weighted features.

Utterance tasks train on pooled per-layer features ``(N, L, D)`` (a weighted sum of layer
means equals the mean of the weighted sum, so pooling before weighting is exact); CTC trains
on frame features. Each probe standardises its inputs with statistics of its own training
subset, trains with Adam and keeps the epoch that was best on the dev set.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .featurizer import Featurizer
from .tasks import TaskKind

PROBES = ("linear", "mlp", "centroid", "knn")
#: neighbours of the kNN probe (fewer when the training subset is smaller)
KNN_NEIGHBOURS = 5
#: heads of the CTC (ASR) probe: S3PRL-style BiLSTM, or a residual convolution stack that
#: trains several times faster on CPU and learns from a few hundred utterances
CTC_HEADS = ("lstm", "conv")


@dataclass(frozen=True)
class ProbeConfig:
    probe: str = "linear"
    learning_rate: float = 1e-3
    max_epochs: int = 200
    patience: int = 20
    batch_size: int = 64
    hidden_size: int = 512  # MARBLE's MLP probe
    dropout: float = 0.2
    layer_norm: bool = False
    ctc_head: str = "lstm"
    #: weight decays (L2 on the head's weights, per training row) the linear probe tries; the
    #: one best on dev is kept. The range spans sklearn's usual C grid for a few thousand rows.
    weight_decays: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5)
    #: L-BFGS iterations per weight decay (warm-started from the previous, stronger one)
    lbfgs_iterations: int = 200
    #: above this many training values (rows x layers x dims) the linear probe trains with
    #: Adam mini-batches like the MLP instead of full-batch L-BFGS
    full_batch_limit: int = 50_000_000
    #: up to this many rows (train + dev) the linear probe chooses its weight decay by 5-fold
    #: cross-validation on train + dev rather than on the one small dev part
    cv_max_rows: int = 1000


class UtteranceProbe(nn.Module):
    def __init__(self, layers: Sequence[int], dim: int, outputs: int, config: ProbeConfig, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        #: the weight decay the linear probe chose on dev (None: trained with Adam)
        self.selected_weight_decay: float | None = None
        #: trained from a seeded start or on seeded batches (Adam); fit_linear_lbfgs clears it
        #: when its solution does not depend on the seed
        self.seed_dependent = True
        self.featurizer = Featurizer(layers, layer_norm=config.layer_norm)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        if config.probe == "mlp":
            self.head = nn.Sequential(nn.Linear(dim, config.hidden_size), nn.ReLU(), nn.Dropout(config.dropout),
                                      nn.Linear(config.hidden_size, outputs))
        else:
            self.head = nn.Linear(dim, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, L, D)
        return self.forward_prepared(self.prepare(x))

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised, layer-major ``(L, B, D)`` features: what :meth:`forward_prepared` takes.

        A full-batch fit evaluates the probe hundreds of times on the same rows; preparing them
        once skips the standardisation and the copy that each call would otherwise make (the
        numbers are the same: the same operations on the same values)."""
        return ((x - self.mean) / self.std).transpose(0, 1).contiguous()

    def forward_prepared(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.featurizer(z))


def standardizer(x: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer, per-dimension mean and std of the training features (std floored)."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    floor = max(float(np.median(std)) * 1e-2, 1e-5)
    return torch.from_numpy(mean).float(), torch.from_numpy(np.maximum(std, floor)).float()


def as_targets(kind: TaskKind, y) -> torch.Tensor:
    if kind is TaskKind.CLASSIFICATION:
        return torch.as_tensor(np.asarray(y), dtype=torch.long)
    return torch.as_tensor(np.asarray(y), dtype=torch.float32)


def probe_loss(kind: TaskKind, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind is TaskKind.CLASSIFICATION:
        return F.cross_entropy(out, y)
    if kind is TaskKind.MULTILABEL:
        return F.binary_cross_entropy_with_logits(out, y)
    return F.mse_loss(out.squeeze(-1), y)


MIN_STEPS_PER_EPOCH = 10


class EarlyStopping:
    """Keeps the dev-best weights; says stop after ``patience`` epochs without improvement."""

    def __init__(self, model: nn.Module, patience: int):
        self.model, self.patience = model, patience
        self.best_score, self.best_epoch, self.waited = -np.inf, 0, 0
        self.best_state = copy.deepcopy(model.state_dict())

    def update(self, score: float, epoch: int) -> bool:
        if score > self.best_score + 1e-9:
            self.best_score, self.best_epoch, self.waited = score, epoch, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
            return False
        self.waited += 1
        return self.waited >= self.patience

    def restore(self) -> int:
        """Load the dev-best weights (eval mode); returns their epoch."""
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        return self.best_epoch


def _epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled mini-batches; tiny (few-shot) training sets are cycled so that an epoch has at
    least MIN_STEPS_PER_EPOCH optimiser steps, otherwise a probe on 8 examples barely moves."""
    batches: list[torch.Tensor] = []
    while len(batches) < MIN_STEPS_PER_EPOCH:
        batches += list(torch.randperm(n, generator=generator).split(batch_size))
    return batches


def train_utterance_probe(
    kind: TaskKind,
    layers: Sequence[int],
    x_train: np.ndarray,
    y_train,
    x_dev: np.ndarray,
    dev_score: Callable[[np.ndarray], float],
    outputs: int,
    config: ProbeConfig,
    seed: int,
    y_dev=None,
    rows_are_examples: bool = True,
    refit_with_dev: bool = True,
) -> tuple[UtteranceProbe, int]:
    """Train on ``(N, L, D)`` features; ``dev_score(outputs_on_dev)`` is higher-is-better.

    The linear probe, when the training set fits in memory and ``y_dev`` is given, is fitted
    to convergence by :func:`fit_linear_lbfgs` (weight decay chosen on dev) and the epoch
    returned is 0. Otherwise: Adam, early stopping on dev; returns the dev-best probe and its epoch.
    """
    if config.probe == "linear" and y_dev is not None and x_train.size <= config.full_batch_limit:
        return fit_linear_lbfgs(kind, layers, x_train, y_train, x_dev, y_dev, dev_score, outputs, config, seed,
                                rows_are_examples, refit_with_dev), 0
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    mean, std = standardizer(x_train)
    model = UtteranceProbe(layers, x_train.shape[-1], outputs, config, mean, std)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    xt = torch.from_numpy(x_train).float()
    yt = as_targets(kind, y_train)
    xd = torch.from_numpy(x_dev).float()
    stopper = EarlyStopping(model, config.patience)
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        for batch in _epoch_batches(len(xt), config.batch_size, generator):
            optimizer.zero_grad()
            probe_loss(kind, model(xt[batch]), yt[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            score = dev_score(model(xd).numpy())
        if stopper.update(score, epoch):
            break
    return model, stopper.restore()


def centroid_scores(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, num_classes: int) -> np.ndarray:
    """Nearest-class-centroid probe: uniform layer average, standardised, cosine to class means.

    No training, so it is the fairest probe with one or two shots per class.
    """
    train, ev = _unit_layer_average(x_train, x_eval)
    centroids = np.zeros((num_classes, train.shape[1]))
    for c in range(num_classes):
        if np.any(y_train == c):
            centroids[c] = train[y_train == c].mean(axis=0)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-8)
    sims = ev @ centroids.T
    sims[:, ~np.isin(np.arange(num_classes), y_train)] = -np.inf
    return sims


def _lbfgs(model: UtteranceProbe, kind: TaskKind, x: torch.Tensor, y: torch.Tensor, weight_decay: float,
           iterations: int) -> None:
    """Minimise mean loss + weight_decay/2 * ||head weights||^2 over all parameters, full batch."""
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=iterations, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-7, tolerance_change=1e-10)

    with torch.no_grad():
        z = model.prepare(x)  # once per fit: the rows and the standardisation do not change

    def closure():
        optimizer.zero_grad()
        loss = probe_loss(kind, model.forward_prepared(z), y) + 0.5 * weight_decay * model.head.weight.square().sum()
        loss.backward()
        return loss

    model.train()
    optimizer.step(closure)
    model.eval()


def fit_linear_lbfgs(kind: TaskKind, layers: Sequence[int], x_train: np.ndarray, y_train, x_dev: np.ndarray, y_dev,
                     dev_score: Callable[[np.ndarray], float], outputs: int, config: ProbeConfig,
                     seed: int, rows_are_examples: bool = True, refit_with_dev: bool = True) -> UtteranceProbe:
    """The linear probe as a regularised logistic (or least-squares) regression, solved exactly.

    Mini-batch Adam with early stopping stops short of the optimum on small sets, which made
    the probe systematically worse than the standard reference (scikit-learn's
    LogisticRegression on standardised features with C chosen on the training data). Here
    each weight decay of ``config.weight_decays`` (strongest first, each warm-started from the
    previous solution) is fitted to convergence with full-batch L-BFGS on the training part
    and scored on dev; the best (ties: the stronger decay) is refitted on training + dev, as
    the reference uses all its labelled data. Small sets (up to ``config.cv_max_rows`` rows,
    one row per example, >= 3 examples per class) choose the decay by 5-fold cross-validation
    on training + dev instead (fewest held-out errors, loss breaking ties; for other kinds the
    lowest held-out loss): one dev part of a few dozen examples picks a decay almost at random.

    ``refit_with_dev=False`` (few-shot subsets): dev labels must not become training data, or
    a "1-shot" probe would learn from the whole dev part; each decay is fitted on the training
    subset alone and the one best on dev is returned as it is (no cross-validation over
    train + dev either, whose fits would be trained mostly on dev rows). Deterministic: the
    head starts at zero and ``seed`` only seeds torch for symmetry with the other probes.
    """
    torch.manual_seed(seed)
    mean, std = standardizer(x_train)
    xt = torch.from_numpy(x_train).float()
    yt = as_targets(kind, y_train)
    xd = torch.from_numpy(x_dev).float()

    def fresh() -> UtteranceProbe:
        model = UtteranceProbe(layers, x_train.shape[-1], outputs, config, mean, std)
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.zero_()
        return model

    # rows of one clip (chunks) must not straddle cross-validation parts: those use the dev part
    parts = _cv_parts(kind, x_train, y_train, x_dev, y_dev, config, seed) if rows_are_examples and refit_with_dev else None
    if not refit_with_dev:
        model, best = fresh(), None
        best_score = -np.inf
        for decay in config.weight_decays:
            _lbfgs(model, kind, xt, yt, decay, config.lbfgs_iterations)
            with torch.no_grad():
                score = dev_score(model(xd).numpy())
            if score > best_score + 1e-9:
                best_score, best = score, (decay, copy.deepcopy(model.state_dict()))
        model.load_state_dict(best[1])
        model.eval()
        model.selected_weight_decay = best[0]
        model.seed_dependent = False
        return model
    if parts is not None:
        best_decay = _cv_weight_decay(kind, layers, x_train, y_train, x_dev, y_dev, outputs, config, parts, fresh)
    else:
        model = fresh()
        best_score, best_decay = -np.inf, config.weight_decays[0]
        for decay in config.weight_decays:
            _lbfgs(model, kind, xt, yt, decay, config.lbfgs_iterations)
            with torch.no_grad():
                score = dev_score(model(xd).numpy())
            if score > best_score + 1e-9:
                best_score, best_decay = score, decay
    final = fresh()
    x_all = torch.cat([xt, xd])
    y_all = torch.cat([yt, as_targets(kind, y_dev)])
    # standardise with the statistics of everything the final probe sees
    final.mean, final.std = standardizer(np.concatenate([x_train, x_dev]))
    for decay in config.weight_decays:  # the same warm-started path down to the chosen decay
        _lbfgs(final, kind, x_all, y_all, decay, config.lbfgs_iterations)
        if decay == best_decay:
            break
    final.selected_weight_decay = best_decay
    final.seed_dependent = parts is not None  # the seed only draws the cross-validation parts
    return final


def _cv_parts(kind: TaskKind, x_train, y_train, x_dev, y_dev, config: ProbeConfig, seed: int):
    """Seeded 5-fold (stratified for classification) parts of train + dev, or None when the set
    is too large or has too few examples per class for cross-validation."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(x_train) + len(x_dev)
    if n > config.cv_max_rows:
        return None
    y_all = np.concatenate([np.asarray(y_train), np.asarray(y_dev)])
    if kind is TaskKind.CLASSIFICATION:
        counts = np.bincount(y_all)
        k = int(min(5, counts[counts > 0].min()))
        if k < 3:
            return None
        return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), y_all))
    if n < 20:
        return None
    return list(KFold(n_splits=5, shuffle=True, random_state=seed).split(np.zeros(n)))


def _cv_weight_decay(kind, layers, x_train, y_train, x_dev, y_dev, outputs, config: ProbeConfig, parts,
                     fresh: Callable[[], "UtteranceProbe"]) -> float:
    """The weight decay with the lowest held-out error (classification; the loss breaks ties) or
    loss (other kinds), summed over ``parts``; ties go to the stronger decay."""
    x_all = torch.from_numpy(np.concatenate([x_train, x_dev])).float()
    y_all = as_targets(kind, np.concatenate([np.asarray(y_train), np.asarray(y_dev)]))
    losses = np.zeros(len(config.weight_decays))
    for fit_rows, held_rows in parts:
        fit_rows, held_rows = torch.from_numpy(fit_rows), torch.from_numpy(held_rows)
        model = fresh()
        for j, decay in enumerate(config.weight_decays):
            _lbfgs(model, kind, x_all[fit_rows], y_all[fit_rows], decay, config.lbfgs_iterations)
            with torch.no_grad():
                out = model(x_all[held_rows])
                loss = float(probe_loss(kind, out, y_all[held_rows]))
                if kind is TaskKind.CLASSIFICATION:  # errors decide, the loss breaks ties
                    loss = float((out.argmax(-1) != y_all[held_rows]).float().mean()) + 1e-4 * min(loss, 100.0)
                losses[j] += loss * len(held_rows)
    return config.weight_decays[int(np.argmin(losses + 1e-12 * np.arange(len(losses))))]


def _unit_layer_average(x_train: np.ndarray, x_eval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardised (training statistics), uniformly layer-averaged, unit-length embeddings."""
    mean, std = (t.numpy() for t in standardizer(x_train))

    def embed(x):
        z = ((x - mean) / std).mean(axis=1)
        return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-8)

    return embed(x_train), embed(x_eval)


def knn_scores(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, num_classes: int,
               neighbours: int = KNN_NEIGHBOURS) -> np.ndarray:
    """k-nearest-neighbour probe on the embedding of :func:`centroid_scores` (no training).

    Per class, the sum of cosine similarities of the k nearest training rows of that class
    (k = ``neighbours`` or the training size when smaller), so close neighbours weigh more
    and ties between vote counts are broken by closeness. Classes absent from training get
    -inf; classes present but not among the neighbours get a score below every vote.
    """
    train, ev = _unit_layer_average(x_train, x_eval)
    sims = ev @ train.T
    k = min(neighbours, len(train))
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(ev), num_classes))
    voted = np.zeros((len(ev), num_classes), dtype=bool)
    for row in range(len(ev)):
        for j in nearest[row]:
            votes[row, int(y_train[j])] += sims[row, j]
            voted[row, int(y_train[j])] = True
    scores = np.where(voted, votes, -2.0 * k)  # below any sum of k cosines
    scores[:, ~np.isin(np.arange(num_classes), y_train)] = -np.inf
    return scores


# ----------------------------------------------------------------------------- CTC


class LSTMCTCHead(nn.Module):
    """Featurizer -> Linear -> BiLSTM -> Linear to characters (blank = 0)."""

    def __init__(self, layers: Sequence[int], dim: int, vocab_size: int, hidden: int = 128, layer_norm: bool = False):
        super().__init__()
        self.featurizer = Featurizer(layers, layer_norm=layer_norm)
        self.proj = nn.Linear(dim, hidden)
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, vocab_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # x: (L, B, T, D)
        h = F.relu(self.proj(self.featurizer(x)))
        packed = nn.utils.rnn.pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=x.shape[2])
        return self.out(h).log_softmax(-1)


class ConvCTCHead(nn.Module):
    """Featurizer -> Linear 256 -> 3 residual blocks (LayerNorm, Conv1d k=5, GELU, dropout)
    -> Linear to characters (blank = 0). Receptive field +-6 frames (~0.25 s at 50 Hz)."""

    def __init__(self, layers: Sequence[int], dim: int, vocab_size: int, hidden: int = 256, blocks: int = 3,
                 kernel: int = 5, dropout: float = 0.1, layer_norm: bool = False):
        super().__init__()
        self.featurizer = Featurizer(layers, layer_norm=layer_norm)
        self.proj = nn.Linear(dim, hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2) for _ in range(blocks))
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, vocab_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # x: (L, B, T, D)
        h = self.proj(self.featurizer(x))
        valid = (torch.arange(h.shape[1], device=h.device)[None] < lengths.to(h.device)[:, None]).unsqueeze(-1)
        for norm, conv in zip(self.norms, self.convs):
            h = h * valid  # padding must not leak into valid frames through the kernel
            h = h + self.dropout(F.gelu(conv(norm(h).transpose(1, 2)).transpose(1, 2)))
        return self.out(h).log_softmax(-1)


def build_ctc_head(config: "ProbeConfig", layers: Sequence[int], dim: int, vocab_size: int) -> nn.Module:
    if config.ctc_head == "lstm":
        return LSTMCTCHead(layers, dim, vocab_size, layer_norm=config.layer_norm)
    if config.ctc_head == "conv":
        return ConvCTCHead(layers, dim, vocab_size, layer_norm=config.layer_norm)
    raise ValueError(f"ctc_head must be one of {CTC_HEADS}, got '{config.ctc_head}'")


class CharVocab:
    """Characters of the training transcripts (lowercased); index 0 is the CTC blank."""

    def __init__(self, transcripts: Sequence[str]):
        chars = sorted({c for t in transcripts for c in t.lower()})
        self.chars = chars
        self.index = {c: i + 1 for i, c in enumerate(chars)}

    def __len__(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> list[int]:
        return [self.index[c] for c in text.lower() if c in self.index]

    def greedy_decode(self, log_probs: torch.Tensor, length: int) -> str:
        ids = log_probs[:length].argmax(-1).tolist()
        out, prev = [], 0
        for i in ids:
            if i != prev and i != 0:
                out.append(self.chars[i - 1])
            prev = i
        return " ".join("".join(out).split())


def _pad_frames(feats: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``(L, T_i, D)`` -> ``(L, B, T, D)`` zero-padded, plus lengths."""
    lengths = torch.tensor([f.shape[1] for f in feats])
    L, D = feats[0].shape[0], feats[0].shape[2]
    out = torch.zeros(L, len(feats), int(lengths.max()), D)
    for b, f in enumerate(feats):
        out[:, b, : f.shape[1]] = torch.from_numpy(f.astype(np.float32))
    return out, lengths


def train_ctc_probe(
    layers: Sequence[int],
    train_feats: Sequence[np.ndarray],
    train_texts: Sequence[str],
    dev_feats: Sequence[np.ndarray],
    dev_score: Callable[[list[str]], float],
    config: ProbeConfig,
    seed: int,
) -> tuple[nn.Module, CharVocab, int]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    vocab = CharVocab(train_texts)
    model = build_ctc_head(config, layers, train_feats[0].shape[-1], len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    targets = [torch.tensor(vocab.encode(t), dtype=torch.long) for t in train_texts]
    stopper = EarlyStopping(model, config.patience)
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        for batch in torch.randperm(len(train_feats), generator=generator).split(max(1, config.batch_size // 8)):
            x, lengths = _pad_frames([train_feats[i] for i in batch])
            ys = [targets[i] for i in batch]
            log_probs = model(x, lengths)
            loss = F.ctc_loss(log_probs.transpose(0, 1), torch.cat(ys), lengths, torch.tensor([len(y) for y in ys]),
                              blank=0, zero_infinity=True)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
        if stopper.update(dev_score(decode_ctc(model, vocab, dev_feats)), epoch):
            break
    return model, vocab, stopper.restore()


@torch.no_grad()
def decode_ctc(model: nn.Module, vocab: CharVocab, feats: Sequence[np.ndarray], batch_size: int = 16) -> list[str]:
    model.eval()
    texts = []
    for start in range(0, len(feats), batch_size):
        x, lengths = _pad_frames(feats[start : start + batch_size])
        log_probs = model(x, lengths)
        texts += [vocab.greedy_decode(log_probs[b], int(lengths[b])) for b in range(len(lengths))]
    return texts
