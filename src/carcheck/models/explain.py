"""Grad-CAM maps for image-level decisions (Selvaraju et al., ICCV 2017), through the
``grad-cam`` package (``pytorch_grad_cam``), as the SOCAR paper shows them for its car-state
classifier.

The map answers "which pixels pushed this classifier towards class c": gradients of the class
logit at the last convolution before pooling (:attr:`BackboneClassifier.target_layer`), averaged
per channel, weight the activations; ReLU; upsampled to the input. It runs in fp32 outside
inference mode (it needs gradients), so it costs a forward and a backward pass: carcheck computes
it only for photos a person must look at.
"""

from __future__ import annotations

import numpy as np
import torch

from .backbone import EfficientNetLiteBackbone
from .classifier import BackboneClassifier, ImageHead, StandaloneNet

__all__ = ["grad_cam"]  # drawing a map over a photo: carcheck.report.html.overlay_cam


def grad_cam(backbone: EfficientNetLiteBackbone, head: ImageHead | StandaloneNet, x: torch.Tensor,
             class_index: int) -> np.ndarray:
    """Grad-CAM of one class for one image.

    Args:
        backbone: the (frozen) shared backbone (unused for a :class:`StandaloneNet`).
        head: a classifier :class:`ImageHead`, or a classifier :class:`StandaloneNet` (then
            its own backbone's last convolution is the target layer).
        x: ``(1, 3, H, W)`` float in [0, 1] (the network input, e.g. longer side 512 px).
        class_index: the logit to explain.
    Returns:
        ``(H, W)`` float32 map in [0, 1].
    Raises:
        ValueError: ``x`` is not a single image or the class index is out of range.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cam takes one image (1, 3, H, W), got {tuple(x.shape)}")
    standalone = isinstance(head, StandaloneNet)
    n = head.num_classes if standalone else getattr(head.head, "num_classes", None)
    if n is not None and not 0 <= class_index < n:
        raise ValueError(f"class index {class_index} out of range for {n} classes")
    model = head.eval() if standalone else BackboneClassifier(backbone, head).eval()
    target = head.backbone.net._conv_head if standalone else model.target_layer
    # Grad-CAM needs d(logit)/d(target activations) only. The target's output is detached and made
    # a leaf that requires grad (a forward hook registered before the library's own, so the library
    # sees that leaf), and no parameter requires grad meanwhile: no graph is built before the target
    # layer and the backward pass stops there instead of running through the whole backbone to the
    # input (same map, measured 3.8 s -> well under 1 s per photo on 2 cores).
    leaf = target.register_forward_hook(lambda _m, _i, out: out.detach().requires_grad_(True))
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        x = x.detach().float().contiguous(memory_format=torch.channels_last)
        with torch.enable_grad(), GradCAM(model=model, target_layers=[target]) as cam:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(class_index)])
    finally:
        leaf.remove()
        for p in params:
            p.requires_grad_(True)
    return np.asarray(maps[0], dtype=np.float32)
