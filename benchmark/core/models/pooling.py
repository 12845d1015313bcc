"""Max pooling that takes PyTorch's channels-last CPU kernel, with the numbers of nn.MaxPool2d.

On the CPU, PyTorch's NCHW max-pool kernel is about ten times slower than its channels-last one
(8 ms against 0.4 ms for a 50x16x32x32 batch on one thread): in the small CNN it was more than
half of a forward pass, and every attack iteration and training step paid it. Both kernels scan a
window in the same row-major order and keep the first maximum (``val > max || isnan(val)``), so
values and argmax indices agree; the indices count positions within one (image, channel) plane,
which is the same in both layouts. The forward therefore runs in channels-last and hands back NCHW
tensors, and the backward is PyTorch's own NCHW max-pool backward with those indices: the same
kernel, on the same inputs, as nn.MaxPool2d's backward (double backward, for Hessian-vector
products, goes through that kernel's derivative as before). ``benchmark.core.fastpaths.reference_paths``
switches back to nn.MaxPool2d's forward; tests compare the two bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.core import fastpaths


class _ChannelsLastMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        out, indices = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), kernel_size, stride, padding,
            dilation, ceil_mode)
        out, indices = out.contiguous(), indices.contiguous()
        ctx.save_for_backward(x, indices)
        ctx.params = (kernel_size, stride, padding, dilation, ceil_mode)
        ctx.mark_non_differentiable(indices)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, indices = ctx.saved_tensors
        kernel_size, stride, padding, dilation, ceil_mode = ctx.params
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, kernel_size, stride, padding, dilation, ceil_mode, indices)
        return grad_x, None, None, None, None, None


def _pair(v) -> list[int]:
    return list(v) if isinstance(v, (tuple, list)) else [int(v), int(v)]


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (same arguments, no state) that pools a contiguous NCHW CPU batch with the
    channels-last kernel; anything else (CUDA, return_indices, an unbatched image, the reference
    paths) takes nn.MaxPool2d's forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.dim() != 4 or self.return_indices
                or not x.is_contiguous() or not fastpaths.fast()):
            return super().forward(x)
        stride = self.stride if self.stride is not None else self.kernel_size
        args = (_pair(self.kernel_size), _pair(stride), _pair(self.padding), _pair(self.dilation),
                bool(self.ceil_mode))
        if not (torch.is_grad_enabled() and x.requires_grad):
            with torch.no_grad():
                out, _ = torch.ops.aten.max_pool2d_with_indices(
                    x.contiguous(memory_format=torch.channels_last), *args)
            return out.contiguous()
        return _ChannelsLastMaxPool.apply(x, *args)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """nn.AdaptiveAvgPool2d that skips the pooling kernel when the input already has the output
    size (the small CNN's and VGG's heads at 32x32: every window is one pixel). PyTorch's kernel
    then returns 0 + x / 1, which is x with -0.0 turned into +0.0: ``x + 0.0`` is that, bit for
    bit, forward and backward, without the kernel's cost (about 1 ms per small-CNN batch of 50 on
    one thread, as much as a convolution)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.output_size
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        if x.dim() == 4 and tuple(x.shape[-2:]) == size and fastpaths.fast():
            return x + 0.0
        return super().forward(x)
