"""Writes the state dict of a PyTorch model as safetensors files, the way
`safetensors.torch.save_file(model.state_dict(), path)` does, for
amp-train/tests/state_dict.rs.

The model is `nn.Sequential(nn.Linear(4, 3), nn.GELU(), nn.LayerNorm(3),
nn.Linear(3, 2))`: PyTorch names its state `0.weight`, `0.bias`, `2.weight`,
`2.bias`, `3.weight`, `3.bias`. The values follow `value(name, i)` below
(exact in f16), so the test recomputes them without reading this file.
Written with the `safetensors` and `numpy` packages (the same file format as
`safetensors.torch`); run: `python3 make_torch_state.py` in this folder.
"""

import numpy as np
from safetensors.numpy import save_file

SHAPES = {
    "0.weight": (3, 4),
    "0.bias": (3,),
    "2.weight": (3,),
    "2.bias": (3,),
    "3.weight": (2, 3),
    "3.bias": (2,),
}


def value(name, i):
    """Element i (row-major) of tensor `name`: multiples of 1/8, alternating sign."""
    k = sorted(SHAPES).index(name)
    return ((i + 1 + k) % 7 - 3) * 0.125


def state(dtype):
    return {
        name: np.array([value(name, i) for i in range(int(np.prod(shape)))], dtype=dtype).reshape(shape)
        for name, shape in SHAPES.items()
    }


save_file(state(np.float32), "torch_sequential_f32.safetensors")
save_file(state(np.float16), "torch_sequential_f16.safetensors")
