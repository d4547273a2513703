"""PCGrad gradient surgery between the teachers' losses (Yu et al. 2020; paper A's option).

Why: a speech and a music teacher can pull the shared student in opposite directions; PCGrad
removes, from each teacher's gradient, its component along any other teacher's conflicting
gradient before summing.
"""

from __future__ import annotations

import torch
from torch import nn


def pcgrad_backward(losses: list[torch.Tensor], params: list[nn.Parameter], generator: torch.Generator) -> None:
    """Add the PCGrad-combined gradient of ``losses`` into ``p.grad`` for every ``p`` in ``params``.

    Adds (never overwrites) so gradient accumulation over micro-batches works like
    ``backward()``; a parameter no loss reaches keeps its ``.grad`` untouched (None stays None),
    as with ``backward()``. The projection order of the other tasks is drawn from ``generator``
    (a CPU generator), so a run and its resume are reproducible; with one loss no number is
    drawn and the result equals plain ``backward()``.

    Under DistributedDataParallel, ``torch.autograd.grad`` bypasses DDP's reduction hooks: the
    caller must all-reduce (and average) the gradients itself after the last micro-batch, and
    should not wrap the model in DDP for these passes. Note also that each rank projects its
    own local gradients, so with several ranks the result is PCGrad of local gradients, summed.
    """
    params = list(params)
    if not losses or not params:
        return
    n = len(losses)
    flat: list[torch.Tensor] = []
    used = [False] * len(params)
    for i, loss in enumerate(losses):
        if loss.requires_grad:
            grads = torch.autograd.grad(loss, params, retain_graph=i < n - 1, allow_unused=True)
        else:
            grads = (None,) * len(params)
        parts = []
        for j, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                parts.append(torch.zeros(p.numel(), device=p.device, dtype=p.dtype))
            else:
                used[j] = True
                parts.append(g.reshape(-1))
        flat.append(torch.cat(parts))

    if n == 1:
        total = flat[0]
    else:
        total = torch.zeros_like(flat[0])
        for i in range(n):
            g = flat[i].clone()
            others = [j for j in range(n) if j != i]
            order = torch.randperm(len(others), generator=generator).tolist()
            for o in order:
                gj = flat[others[o]]  # the ORIGINAL gradient of task j
                dot = torch.dot(g, gj)
                if dot < 0:
                    g = g - dot / torch.dot(gj, gj) * gj
            total += g

    offset = 0
    for j, p in enumerate(params):
        size = p.numel()
        if used[j]:
            g = total[offset : offset + size].view_as(p)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.add_(g)
        offset += size
