"""Probes of the resnet_basics assignment: run in the sandbox, on the submission and on the solution.

Each function takes the notebook's namespace and a seed the grader picks at grading time,
calls the notebook's code on seeded inputs, and returns outputs; it holds no expected value.
The judgement (points, tolerances, which probe belongs to which question) is in
hidden_tests.py, which the sandbox never sees. One probe per hidden test, same name.
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn

from resnet_explorer import build
from resnet_explorer.grading.probing import get, parameter_shapes, randomize, seeded


def _shortcut(ns, seed, cin, cout, stride, size):
    module = get(ns, "ShortcutA")(cin, cout, stride)
    return {"out": module(seeded(seed, 2, cin, size, size))}


def q1_identity(ns, seed):
    return _shortcut(ns, seed, 16, 16, 1, 8)


def q1_downsample(ns, seed):
    return _shortcut(ns, seed, 16, 32, 2, 8)


def q1_odd_size(ns, seed):
    return _shortcut(ns, seed, 8, 16, 2, 7)


def _block(ns, seed, cls, *args, cin, size=8):
    block = randomize(get(ns, cls)(*args), seed)
    with torch.no_grad():
        return {"out": block(seeded(seed + 1, 2, cin, size, size))}


def q2_identity_block(ns, seed):
    return _block(ns, seed, "BasicBlock", 16, 16, 1, cin=16)


def q2_downsample_block(ns, seed):
    return _block(ns, seed, "BasicBlock", 16, 32, 2, cin=16)


def q3_identity_block(ns, seed):
    return _block(ns, seed, "Bottleneck", 64, 16, 1, cin=64)


def q3_projection_block(ns, seed):
    return _block(ns, seed, "Bottleneck", 32, 16, 2, cin=32)


def q3_parameters(ns, seed):
    return {"shapes": parameter_shapes(get(ns, "Bottleneck")(32, 16, 2))}


def _conv_macs(ns, seed, cin, cout, k, stride, pad, groups, bias, size):
    conv = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=bias)
    return {"macs": int(get(ns, "conv_macs")(conv, (size, size)))}


def q4_plain_conv(ns, seed):
    return _conv_macs(ns, seed, 16, 32, 3, 1, 1, 1, False, 10 + seed % 7)


def q4_strided_conv(ns, seed):
    return _conv_macs(ns, seed, 3, 64, 7, 2, 3, 1, False, 224)  # the ResNet stem


def q4_conv_with_bias(ns, seed):
    return _conv_macs(ns, seed, 8, 24, 3, 1, 1, 1, True, 12 + seed % 5)


def q4_grouped_conv(ns, seed):
    return _conv_macs(ns, seed, 96, 256, 5, 1, 2, 2, False, 27)  # AlexNet's conv2


def _net_macs(ns, model, size):
    return {"macs": int(get(ns, "net_macs")(model.eval(), size))}


def q5_cifar_resnet20(ns, seed):
    return _net_macs(ns, build("cifar-resnet20"), 32)


def q5_resnet18(ns, seed):
    return _net_macs(ns, build("resnet18", input_size=64), 64)  # option B: 1x1 projections count


def q5_biased_net(ns, seed):
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=True), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2, bias=True), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    return _net_macs(ns, model, 16)


def _responses(ns, seed, name):
    model = randomize(build(name, width=4), seed)
    responses = get(ns, "layer_responses")(model, seeded(seed + 1, 8, 3, 32, 32))
    return {"responses": {str(k): float(v) for k, v in dict(responses).items()}}


def q6_plain_net(ns, seed):
    return _responses(ns, seed, "cifar-plain8")


def q6_residual_net(ns, seed):
    return _responses(ns, seed, "cifar-resnet8")


def q7_experiment(ns, seed):
    out = tempfile.mkdtemp(prefix="q7-")
    results = get(ns, "degradation_experiment")((8,), 6, out, seed=seed % 1000)
    return {"results": {str(k): float(v) for k, v in dict(results).items()}}
