"""Write ``mvit_v2_s_shapes.json``: every key of torchvision's ``mvit_v2_s`` state dict with its shape, in order.

Run once by hand in a separate venv that has torchvision (the project never depends on it: its wheels do not import
with the CPU torch, docs/stack.md)::

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/tv/bin/python tests/support/ifdd_testkit/make_mvit_v2_s_shapes.py

Only the architecture is built (``weights=None``): nothing is downloaded. tests/test_weights.py builds its stand-in
for the Kinetics-400 file from this list, so the K400 mapping is checked against the real key layout and shapes.
"""

import json
from pathlib import Path

import torch
import torchvision
from torchvision.models.video import mvit_v2_s

if __name__ == "__main__":
    sd = mvit_v2_s(weights=None).state_dict()
    out = Path(__file__).with_name("mvit_v2_s_shapes.json")
    head = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "parameters": sum(v.numel() for v in sd.values())}
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(list(v.shape))}" for k, v in sd.items())  # one key a line
    out.write_text(json.dumps(head)[:-1] + ',\n "shapes": {\n' + rows + "\n }\n}\n")
    print(f"{out}: {len(sd)} keys")
