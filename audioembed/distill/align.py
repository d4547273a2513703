"""Teacher frames -> student frames.

16 kHz teachers give 50 Hz frames like the student; MERT-v1 (24 kHz) gives 75 Hz, which must
be mapped onto the student's 50 Hz frames before the loss can compare them frame by frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_frames(x: torch.Tensor, src_lengths: torch.Tensor, dst_lengths: torch.Tensor, dst_frames: int) -> torch.Tensor:
    """Linearly interpolate each item's valid frames to its student length; zero the rest.

    ``x`` is ``(B, T_src, D)`` or ``(B, K, T_src, D)``. Frame centres are aligned
    (``align_corners=False``). Items whose lengths already agree are copied bit-for-bit, so
    50 Hz teachers pass through untouched. Items are grouped by (src, dst) length, so a batch
    costs one interpolation per distinct pair. Targets only: no gradient is needed.
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"x must be (B, T, D) or (B, K, T, D), got shape {tuple(x.shape)}")
    squeeze = x.dim() == 3
    if squeeze:
        x = x[:, None]
    b, k, t_src, d = x.shape
    src = [int(v) for v in src_lengths.tolist()]
    dst = [int(v) for v in dst_lengths.tolist()]
    if len(src) != b or len(dst) != b:
        raise ValueError(f"need {b} source and destination lengths, got {len(src)} and {len(dst)}")
    if max(src, default=0) > t_src or min(src, default=0) < 0:
        raise ValueError(f"source lengths {src} do not fit {t_src} frames")
    if max(dst, default=0) > dst_frames or min(dst, default=0) < 0:
        raise ValueError(f"destination lengths {dst} do not fit {dst_frames} frames")
    out = x.new_zeros(b, k, dst_frames, d)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (s, n) in enumerate(zip(src, dst)):
        if n == 0:
            continue
        if s == n:
            out[i, :, :n] = x[i, :, :n]
        elif s == 0:
            continue  # nothing to interpolate from: leave zeros
        else:
            groups.setdefault((s, n), []).append(i)
    with torch.no_grad():
        for (s, n), items in groups.items():
            idx = torch.tensor(items, device=x.device)
            seg = x[idx, :, :s].float()  # (G, K, s, D); interpolate in float32 (fp16 cache)
            seg = seg.permute(0, 1, 3, 2).reshape(len(items) * k, d, s)
            seg = F.interpolate(seg, size=n, mode="linear", align_corners=False)
            seg = seg.reshape(len(items), k, d, n).permute(0, 1, 3, 2)
            out[idx, :, :n] = seg.to(x.dtype)
    return out[:, 0] if squeeze else out
