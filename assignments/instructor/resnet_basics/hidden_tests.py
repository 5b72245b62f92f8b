"""Hidden tests of the resnet_basics assignment: the judgement, kept on the grader's side.

Each test names a probe of probes.py (same name), the question it belongs to and its
points. The grader runs the probe on the solution and on each submission (each in its own
sandbox, on seeds chosen at grading time) and compares the outputs here, in the trusted
process: tensors and floats to ``rtol``/``atol``, integers and strings exactly. No
expected value is written down: the solution computes them.

FORBIDDEN: the library code each question's answer may not call (the library's own
answer, or a counter doing the work); a test whose probe ran one of them gets no points.
The student notebook says so, and its visible checks refuse such answers.
"""

from resnet_explorer.grading import HiddenTest
from resnet_explorer.grading.checks import FORBIDDEN  # noqa: F401  (the same list the visible checks use)

T = HiddenTest
TESTS = [
    T("q1_identity", "q1", 1, "ShortcutA with equal channels and stride 1 is the identity"),
    T("q1_downsample", "q1", 2, "ShortcutA 16->32, stride 2: every 2nd pixel, 16 zero channels"),
    T("q1_odd_size", "q1", 1, "ShortcutA on a 7x7 map with stride 2 gives 4x4"),
    T("q2_identity_block", "q2", 2, "BasicBlock 16->16, stride 1, seeded weights"),
    T("q2_downsample_block", "q2", 3, "BasicBlock 16->32, stride 2 (option A shortcut)"),
    T("q3_identity_block", "q3", 2, "Bottleneck 64 -> 16 -> 64, stride 1"),
    T("q3_projection_block", "q3", 2, "Bottleneck 32 -> 16 -> 64, stride 2 (projection)"),
    T("q3_parameters", "q3", 1, "Bottleneck parameter names and shapes"),
    T("q4_plain_conv", "q4", 1, "conv_macs of a 3x3 conv, stride 1"),
    T("q4_strided_conv", "q4", 1, "conv_macs of the 7x7/2 stem on 224x224"),
    T("q4_conv_with_bias", "q4", 1, "conv_macs of a conv with bias: biases are not counted"),
    T("q4_grouped_conv", "q4", 1, "conv_macs of a grouped conv (groups=2)"),
    T("q5_cifar_resnet20", "q5", 1, "net_macs of cifar-resnet20"),
    T("q5_resnet18", "q5", 1, "net_macs of resnet18 at 64x64 (projection shortcuts)"),
    T("q5_biased_net", "q5", 1, "net_macs of a small net with biased and grouped convs and an fc"),
    T("q6_plain_net", "q6", 2, "layer_responses of cifar-plain8 (seeded weights)"),
    T("q6_residual_net", "q6", 2, "layer_responses of cifar-resnet8 (seeded weights)"),
    T("q7_experiment", "q7", 2, "degradation_experiment((8,), 6 iterations) gives the run's final training errors"),
]
