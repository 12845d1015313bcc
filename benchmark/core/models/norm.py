"""BatchNorm2d whose eval-mode input gradient skips work PyTorch's CPU kernel does for nothing.

Attacks differentiate the model with respect to its input only, with BatchNorm in eval mode (the
evaluation, and adversarial-example generation during training). PyTorch's CPU backward for that
case still reduces the whole batch twice per channel (the sum of dy and of (x - mean) * dy, for
the weight and bias gradients) before it writes dx = dy * invstd * w: three passes over the data
where one is needed, about as much time as a convolution of the small CNN. When the affine
parameters do not require grad, this module computes the forward with PyTorch's own kernel and
the input gradient with the kernel's formula and roundings: invstd = float(1 / sqrt(double(var)
+ eps)), then (dy * invstd) * w in float32 (aten/src/ATen/native/cpu/batch_norm_kernel.cpp,
``batch_norm_cpu_backward_contiguous_impl``, evaluation mode). Everything else (training mode,
trainable affine parameters, CUDA, half precision, the reference paths of
``benchmark.core.fastpaths``) is nn.BatchNorm2d's forward. Tests compare the two bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.core import fastpaths


class _EvalBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, eps):
        out = F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.0, eps)
        ctx.save_for_backward(x, running_mean, running_var, weight)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad):
        x, running_mean, running_var, weight = ctx.saved_tensors
        if torch.is_grad_enabled():
            # create_graph (Hessian-vector products): PyTorch's own kernel, whose double
            # backward is what the reference path differentiates
            grad_x = torch.ops.aten.native_batch_norm_backward(
                grad, x, weight, running_mean, running_var, None, None, False, ctx.eps,
                [True, False, False])[0]
            return grad_x, None, None, None, None, None
        scale = (1.0 / torch.sqrt(running_var.double() + ctx.eps)).to(grad.dtype).view(1, -1, 1, 1)
        grad_x = grad * scale
        if weight is not None:
            grad_x = grad_x * weight.view(1, -1, 1, 1)
        return grad_x, None, None, None, None, None


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (same arguments and state) with the eval-mode input gradient above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.training or self.running_mean is None or x.device.type != "cpu"
                or x.dtype != torch.float32 or x.dim() != 4 or not x.is_contiguous()
                or not (torch.is_grad_enabled() and x.requires_grad)
                or (self.weight is not None and self.weight.requires_grad)
                or (self.bias is not None and self.bias.requires_grad)
                or not fastpaths.fast()):
            return super().forward(x)
        self._check_input_dim(x)
        return _EvalBatchNorm.apply(x, self.running_mean, self.running_var, self.weight, self.bias,
                                    self.eps)
