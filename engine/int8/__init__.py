"""The int8 side: quantization plans and the integer-exact int8 executor.

- :mod:`.plan`: :class:`QuantPlan` (QParams per tensor, a path per node), ``propagate_passthrough``;
- :mod:`.executor`: :class:`Int8Executor` / :class:`Int8Result` (integer kernels in :mod:`.ops`);
- :mod:`.qdq`: ``plan_from_qdq`` -- the plan and float reference of a QDQ model.
"""

from engine.int8.executor import Int8Executor, Int8Result, run_int8
from engine.int8.plan import QuantPlan, propagate_passthrough
from engine.int8.qdq import plan_from_qdq
from engine.int8.qtensor import QTensor

__all__ = ["Int8Executor", "Int8Result", "QTensor", "QuantPlan", "plan_from_qdq", "propagate_passthrough", "run_int8"]
