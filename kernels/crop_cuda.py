"""CUDA twin of kernels.crop.crop_normalise_cpu: crop + bilinear resize + normalise + HWC -> CHW in one kernel.

The frame goes to the device once as uint8 (H, W, 3); every crop of it is written straight into the network's
(B, 3, h, w) float32 input, so no resized copies, float frames or per-channel passes exist in between. One thread
per crop pixel (b, y, x), x fastest, reads the four neighbouring pixels (all three channels) and writes the three
planes. Semantics, pixel convention and pad handling are kernels/crop.py's; the source position is computed in
float64 (a few thousand pixels off the origin, float32 would move it by ~1e-4 pixel) and the blend in float32,
so results match kernels/reference.py's float reference to ~1e-4 grey levels. cv2's CPU path rounds to integer
grey levels, so the two twins differ by up to the CPU path's tolerance, not more.

Per call nothing is allocated on the device except, when ``to_image`` is a host array, its (B, 2, 3) float64
copy (48 bytes per crop): pass a device array to skip that too. mean, scale, the channel order and the pad value
travel as kernel arguments. Arrays and streams are accepted as in kernels/cuda.py (device arrays, anything with
``__cuda_array_interface__``, host numpy for tests and one-off calls; a numba stream, a raw handle or an object
with ``cuda_stream``). Like kernels/cuda.py, importing this needs no GPU, and NUMBA_ENABLE_CUDASIM=1 runs it in
Numba's simulator.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from posestream.kernels.crop import check_crop_arguments
from posestream.kernels.cuda import _Arguments, _blocks, _resolve_stream, _threads_per_block, as_device_array

__all__ = ["crop_normalise_cuda"]


@cuda.jit(device=True)
def _pixel(image, row, col, channel, pad_value):
    """One channel of one pixel as float32; positions outside the image read the pad value."""
    if row < 0 or row >= image.shape[0] or col < 0 or col >= image.shape[1]:
        return pad_value
    return float32(image[row, col, channel])


@cuda.jit(device=True)
def _bilinear_channel(image, top, left, fx, fy, channel, pad_value):
    one = float32(1.0)
    upper = _pixel(image, top, left, channel, pad_value) * (one - fx) + _pixel(image, top, left + 1, channel,
                                                                               pad_value) * fx
    lower = _pixel(image, top + 1, left, channel, pad_value) * (one - fx) + _pixel(image, top + 1, left + 1,
                                                                                   channel, pad_value) * fx
    return upper * (one - fy) + lower * fy


@cuda.jit(cache=True)
def _crop_normalise_kernel(image, to_image, pad_value, source0, source1, source2, mean0, mean1, mean2, scale0,
                           scale1, scale2, out):
    """One thread per crop pixel: index = (b * h + y) * w + x."""
    index = cuda.grid(1)
    height = out.shape[2]
    width = out.shape[3]
    if index >= out.shape[0] * height * width:
        return
    x = index % width
    y = (index // width) % height
    b = index // (width * height)
    # float() keeps the simulator, which runs this as Python, in float64 like the compiled kernel.
    source_x = float(to_image[b, 0, 0]) * x + float(to_image[b, 0, 1]) * y + float(to_image[b, 0, 2])
    source_y = float(to_image[b, 1, 0]) * x + float(to_image[b, 1, 1]) * y + float(to_image[b, 1, 2])
    left_edge = math.floor(source_x)
    top_edge = math.floor(source_y)
    fx = float32(source_x - left_edge)
    fy = float32(source_y - top_edge)
    left = int(left_edge)
    top = int(top_edge)
    pad = float32(pad_value)
    out[b, 0, y, x] = (_bilinear_channel(image, top, left, fx, fy, source0, pad) - float32(mean0)) * float32(scale0)
    out[b, 1, y, x] = (_bilinear_channel(image, top, left, fx, fy, source1, pad) - float32(mean1)) * float32(scale1)
    out[b, 2, y, x] = (_bilinear_channel(image, top, left, fx, fy, source2, pad) - float32(mean2)) * float32(scale2)


def crop_normalise_cuda(image, to_image, out, mean, scale, swap_rb, pad_value, stream=0) -> None:
    """The fused twin of kernels.crop.crop_normalise_cpu, same arguments: image a device (or host) uint8
    (H, W, 3) array, to_image (B, 2, 3) float64 on the device (no copy) or the host (copied), out a device
    float32 (B, 3, h, w) array (a host one is copied in and back: the slow test path). One launch on ``stream``;
    it returns without waiting for the device unless a host array has to be copied back."""
    stream = _resolve_stream(stream)
    args = _Arguments(stream)
    image_device = args.read(image)
    if as_device_array(to_image, producer_stream_given=not isinstance(stream, int)) is None:
        to_image = np.ascontiguousarray(to_image, dtype=np.float64)
    affines_device = args.read(to_image)
    out_device = args.write(out)
    check_crop_arguments(image_device.shape, image_device.dtype, affines_device.shape, out_device.shape,
                         out_device.dtype, mean, scale, pad_value)
    if affines_device.dtype != np.float64:
        raise ValueError(f"to_image on the device must be float64, got {affines_device.dtype}")
    sources = (2, 1, 0) if swap_rb else (0, 1, 2)
    total = out_device.shape[0] * out_device.shape[2] * out_device.shape[3]
    if total:
        threads = _threads_per_block()
        _crop_normalise_kernel[_blocks(total, threads), threads, stream](
            image_device, affines_device, float(pad_value), *sources, *(float(value) for value in mean),
            *(float(value) for value in scale), out_device)
    args.finish()
