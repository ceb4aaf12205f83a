"""Layered (Sugiyama-style) top-to-bottom layout of a model graph, headless.

:func:`layout_graph` places the operator nodes of an :class:`engine.graph.Graph` the way
Netron draws a model: data flows downward, every edge goes from a layer to a later one.
Initializers are not nodes (a node carries the count and total elements of the weights it
reads); each graph input and output is a small terminal node.

Steps (all O(V + E) per pass; E counts the edges of the layered graph, dummies included):

1. Layering: longest path from the sources, then nodes that write more tensors than they
   lengthen are pulled down next to their first reader (a cheap stand-in for network
   simplex: graph inputs and constant-like ops sit just above where they are used).
2. Dummy nodes: a tensor read on several later layers gets ONE chain of dummy nodes down to
   its last reader; each reader branches off the chain (a residual or an attention mask read
   by every block costs one column, not one column per reader).
3. Crossing reduction: a few down/up barycenter sweeps, each layer re-sorted with numpy
   (bincount of neighbour positions; ties keep the previous order, so it is deterministic).
4. Coordinates: down/up passes; each layer takes the weighted least-squares x closest to its
   neighbours' mean x that keeps the order and the minimum gaps (isotonic regression by
   pool-adjacent-violators, O(width) per layer). The operator path is the spine: a long edge
   pulls neither its source nor its readers (unless it is their only edge) and its first and
   last bend points give way, so it runs alongside; inside a chain the bend points are stiff.
   A last down pass puts every node under its inputs; the linear sideways drift that a deep
   repetitive graph accumulates (a join sits between its inputs, block after block) is then
   subtracted and a settling pass re-aligns single-input nodes, so the correction lands on
   the edges into joins. Finally each long edge is made vertical wherever its neighbours
   leave room, and nodes a few units off their only neighbour are lined up with it.
5. Routing: each edge is a polyline from the bottom centre of its source through its dummy
   nodes (entering and leaving each dummy's layer band vertically) to the top centre of its
   destination.

Units: scene units, 1 unit = 1 pixel at zoom 1; node sizes are meant for a label font of
about 12 px (op type) and 10 px (name). ``x, y`` of a box is its top-left corner; y grows
downward. The inherently sequential parts (topological order, layering, isotonic regression,
chain straightening) are plain Python loops visiting each node a bounded number of times;
per-layer work is numpy. A 5,000-node encoder takes about 1.5 s on one core
(``benchmarks/bench_layout.py``).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.errors import Cancelled
from engine.graph import Graph

ProgressFn = Callable[[int, int], None]
CancelledFn = Callable[[], bool]

# sizes in scene units
OP_CHAR_W = 7.4  # mean advance of a 12 px bold label character
DETAIL_CHAR_W = 6.0  # mean advance of a 10 px name character
TERMINAL_CHAR_W = 6.8  # mean advance of an 11 px terminal label character
NODE_PAD_X = 22.0  # left + right padding inside a box
NODE_MIN_W = 72.0
NODE_MAX_W = 240.0
OP_NODE_H = 40.0
TERMINAL_H = 28.0
DETAIL_MAX_CHARS = 30  # longer short names are cut at the left with an ellipsis
RANK_GAP = 34.0  # vertical space between layer bands
NODE_HALF_GAP = 14.0  # half the horizontal gap next to a real node
DUMMY_HALF_GAP = 5.0  # half the horizontal gap next to an edge passing through a layer
MARGIN = 24.0

SNAP_DISTANCE = 24.0  # nodes closer than this to their only neighbour's x are lined up with it
BEND_COST = 60.0  # scene units of sideways chain movement worth one bend less
ORDER_SWEEPS = 2  # down+up barycenter sweep pairs
COORD_PASSES = 2  # down+up coordinate passes
DUMMY_WEIGHT = 20.0  # stiffness of a dummy (edge bend point) relative to a real node
CHAIN_PULL = 8.0  # pull of a dummy chain's links relative to a one-layer edge
BRANCH_PULL = 0.05  # pull of a reader on the middle of the chain it branches off
PASSIVE_PULL = 1e-3  # pull of a long edge on its source and readers (counts only when alone)
SOFT_DUMMY_WEIGHT = 1e-3  # stiffness of every dummy in the last pass
YIELD_WEIGHT = 0.02  # stiffness of a chain's end dummy where it meets the operator path


@dataclass(frozen=True)
class NodeBox:
    """One placed node. ``kind``: ``"op"``, ``"input"`` or ``"output"`` (graph terminals).

    ``label`` is what the box shows first (op type, or the tensor name of a terminal);
    ``detail`` the second line (short node name, or the terminal's shape). ``weights`` is the
    number of initializers the node reads, ``params`` their total element count and ``badge``
    that count as short text (``"4.2k"``; empty without weights), sized into ``w``.
    """

    name: str
    kind: str
    op_type: str
    label: str
    detail: str
    x: float
    y: float
    w: float
    h: float
    layer: int
    weights: int = 0
    params: int = 0
    badge: str = ""

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2, self.y + self.h / 2)


@dataclass(frozen=True)
class EdgeRoute:
    """One edge: ``tensor`` flows from node ``src`` to node ``dst`` along ``points`` (x, y)."""

    src: str
    dst: str
    tensor: str
    points: list[tuple[float, float]]


@dataclass
class GraphLayout:
    """Placed nodes (by name) and routed edges; ``width`` x ``height`` is the scene size."""

    nodes: dict[str, NodeBox]
    edges: list[EdgeRoute]
    width: float
    height: float
    layers: int
    dummies: int = 0
    node_order: list[str] = field(default_factory=list)  # reading order: top to bottom, left to right


def short_name(name: str, op_type: str) -> str:
    """The last two parts of a path-like node name, without a trailing op type.

    ``/blocks.0/attn/q/MatMul`` (MatMul) -> ``attn/q``; long results keep their right end.
    """
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    if len(parts) > 1 and parts[-1] == op_type:
        parts = parts[:-1]
    text = "/".join(parts[-2:]) if parts else name
    if len(text) > DETAIL_MAX_CHARS:
        text = "\u2026" + text[-(DETAIL_MAX_CHARS - 1):]
    return text


def shape_text(shape: tuple | None) -> str:
    """``1x3x224x224`` style text of a shape ("?" when unknown)."""
    if shape is None:
        return "?"
    return "\u00d7".join(str(d) for d in shape) if shape else "scalar"


def count_text(count: int) -> str:
    """Short element count: 950, 4.2k, 1.3M, 2.0G."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.1f}{suffix}"
    return str(count)


def _terminal_width(label: str, detail: str) -> float:
    """Width of a graph input/output pill: ``name  shape`` on one 11 px line."""
    w = (len(label) + len(detail) + 2) * TERMINAL_CHAR_W + NODE_PAD_X
    return float(min(NODE_MAX_W, max(NODE_MIN_W, w)))


def _box_width(label: str, detail: str, badge: str = "") -> float:
    detail_chars = len(detail) + (len(badge) + 5 if badge else 0)  # "detail · W badge"
    w = max(len(label) * OP_CHAR_W, detail_chars * DETAIL_CHAR_W) + NODE_PAD_X
    return float(min(NODE_MAX_W, max(NODE_MIN_W, w)))


class _Steps:
    """Progress and cancel checks: ``step()`` after each unit of work."""

    def __init__(self, total: int, progress: ProgressFn | None, cancelled: CancelledFn | None) -> None:
        self.total = total
        self.done = 0
        self.progress = progress
        self.cancelled = cancelled

    def check(self) -> None:
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("graph layout cancelled")

    def step(self) -> None:
        self.check()
        self.done = min(self.total, self.done + 1)
        if self.progress is not None:
            self.progress(self.done, self.total)


def layout_graph(
    graph: Graph,
    progress: ProgressFn | None = None,
    cancelled: CancelledFn | None = None,
) -> GraphLayout:
    """Lay ``graph`` out top to bottom; see the module docstring for the method and units.

    ``progress(done, total)`` is called after each step (``done`` reaches ``total`` at the
    end); ``cancelled()`` is polled between steps and every few hundred layers inside them,
    and raises :class:`engine.errors.Cancelled` when it returns True.
    """
    steps = _Steps(5 + 2 * ORDER_SWEEPS + 2 * COORD_PASSES, progress, cancelled)
    steps.check()

    # ---------------------------------------------------------------- nodes and hyperedges
    names: list[str] = []
    kinds: list[str] = []
    ops: list[str] = []
    labels: list[str] = []
    details: list[str] = []
    weight_counts: list[int] = []
    param_counts: list[int] = []
    used = {n.name for n in graph.nodes}

    def terminal_key(prefix: str, tensor: str) -> str:
        key = f"{prefix}:{tensor}"
        while key in used:
            key = f"{key}'"
        used.add(key)
        return key

    source: dict[str, int] = {}  # tensor -> id of the node (or input terminal) writing it
    for t in graph.inputs:
        if t.name in graph.weights:  # old exporters list initializers as graph inputs
            continue
        source[t.name] = len(names)
        names.append(terminal_key("input", t.name))
        kinds.append("input")
        ops.append("Input")
        labels.append(t.name)
        details.append(shape_text(t.shape))
        weight_counts.append(0)
        param_counts.append(0)
    first_op = len(names)
    for node in graph.nodes:
        wnames = list(dict.fromkeys(i for i in node.inputs if i and i in graph.weights and i not in source))
        numels = [graph.weights.info[w].numel for w in wnames]
        names.append(node.name)
        kinds.append("op")
        ops.append(node.op_type)
        labels.append(node.op_type)
        details.append(short_name(node.name, node.op_type))
        weight_counts.append(len(wnames))
        param_counts.append(int(sum(n for n in numels if n is not None)))
        for out in node.outputs:
            if out:
                source[out] = len(names) - 1
    first_output = len(names)
    for t in graph.outputs:
        names.append(terminal_key("output", t.name))
        kinds.append("output")
        ops.append("Output")
        labels.append(t.name)
        details.append(shape_text(graph.tensor(t.name).shape))
        weight_counts.append(0)
        param_counts.append(0)
    n = len(names)
    badges = [count_text(p) if w else "" for w, p in zip(weight_counts, param_counts)]

    # hyperedge = one tensor from its source to all its readers (readers in node order)
    readers: dict[str, list[int]] = {}
    for k, node in enumerate(graph.nodes):
        for name in dict.fromkeys(i for i in node.inputs if i and i in source):
            readers.setdefault(name, []).append(first_op + k)
    for k, t in enumerate(graph.outputs):
        if t.name in source:
            readers.setdefault(t.name, []).append(first_output + k)
    hyper_src: list[int] = []
    hyper_tensor: list[str] = []
    hyper_readers: list[list[int]] = []
    for tensor, rs in readers.items():
        hyper_src.append(source[tensor])
        hyper_tensor.append(tensor)
        hyper_readers.append(rs)
    steps.step()

    # ---------------------------------------------------------------- topological order
    succ: list[list[int]] = [[] for _ in range(n)]
    pred: list[list[int]] = [[] for _ in range(n)]
    for s, rs in zip(hyper_src, hyper_readers):
        for r in rs:
            if r != s:
                succ[s].append(r)
                pred[r].append(s)
    indeg = [len(p) for p in pred]
    heap = [v for v in range(n) if indeg[v] == 0]
    heapq.heapify(heap)
    topo: list[int] = []
    placed = [False] * n
    while len(topo) < n:
        if not heap:  # a cycle (not a valid ONNX graph): break it at the earliest node left
            v = next(v for v in range(n) if not placed[v])
            indeg[v] = 0
            heap.append(v)
        v = heapq.heappop(heap)
        if placed[v]:
            continue
        placed[v] = True
        topo.append(v)
        for w in succ[v]:
            indeg[w] -= 1
            if indeg[w] == 0 and not placed[w]:
                heapq.heappush(heap, w)
    rank = [0] * n
    for i, v in enumerate(topo):
        rank[v] = i

    # ---------------------------------------------------------------- layering
    layer = [0] * n
    for v in topo:
        for u in pred[v]:
            if rank[u] < rank[v] and layer[u] + 1 > layer[v]:
                layer[v] = layer[u] + 1
    out_hyper: list[list[int]] = [[] for _ in range(n)]
    in_hyper: list[list[int]] = [[] for _ in range(n)]
    for h, (s, rs) in enumerate(zip(hyper_src, hyper_readers)):
        out_hyper[s].append(h)
        for r in rs:
            in_hyper[r].append(h)
    deepest_reader = [max(layer[r] for r in rs) for rs in hyper_readers]  # kept up to date below
    for v in reversed(topo):
        below = [layer[r] for h in out_hyper[v] for r in hyper_readers[h] if rank[r] > rank[v]]
        if not below:
            continue
        target = min(below) - 1
        if target <= layer[v]:
            continue
        gain = len(out_hyper[v])  # each written tensor's chain gets shorter ...
        for h in in_hyper[v]:  # ... each read tensor's longer if v ends up its deepest reader
            if hyper_src[h] != v and deepest_reader[h] < target:
                gain -= 1
        if gain > 0:
            layer[v] = target
            for h in in_hyper[v]:
                deepest_reader[h] = max(deepest_reader[h], target)
    layer_arr = np.unique(np.asarray(layer, dtype=np.int64), return_inverse=True)[1].reshape(-1)
    layer = layer_arr.tolist()
    steps.step()

    # ---------------------------------------------------------------- dummy chains
    node_layer: list[int] = list(layer)
    node_key: list[float] = [float(rank[v]) for v in range(n)]
    is_dummy: list[bool] = [False] * n
    eu: list[int] = []  # edges of the layered graph, each spanning one layer
    ev: list[int] = []
    # Pull of an edge on its lower end (down passes) and on its upper end (up passes). The
    # operator path is the spine: a long edge (dummy chain) is passive at both ends, so its
    # source and readers line up with their one-layer neighbours and the chain runs alongside
    # (no drift of blocks joined by residual connections); inside the chain the links pull
    # hard, and a reader branching off the middle of a chain does not bend it.
    e_down_w: list[float] = []
    e_up_w: list[float] = []
    yields_down: list[bool] = [False] * n  # the first dummy of a chain gives way in down passes
    yields_up: list[bool] = [False] * n  # the last dummy gives way in up passes
    routes: list[tuple[int, int, str, list[int]]] = []  # src, dst, tensor, dummy ids on the way
    chain_of: dict[int, list[int]] = {}  # first dummy of a chain -> the whole chain
    chain_ends: list[tuple[list[int], int, int]] = []  # chain, its source, its (first) last reader
    for h, (s, rs) in enumerate(zip(hyper_src, hyper_readers)):
        ls = layer[s]
        down = [r for r in rs if layer[r] > ls]
        chain: list[int] = []
        if down:
            deepest = max(layer[r] for r in down)
            prev = s
            for lv in range(ls + 1, deepest):
                d = len(node_layer)
                node_layer.append(lv)
                node_key.append(rank[s] + 0.5)
                is_dummy.append(True)
                yields_down.append(not chain)
                yields_up.append(lv == deepest - 1)
                eu.append(prev)
                ev.append(d)
                e_down_w.append(1.0)  # a dummy has one upper neighbour: any weight will do
                e_up_w.append(PASSIVE_PULL if prev == s else CHAIN_PULL)
                chain.append(d)
                prev = d
        for r in rs:
            if r == s:
                continue
            if layer[r] <= ls:  # only in a broken (cyclic) graph: drawn straight, not layered
                routes.append((s, r, hyper_tensor[h], []))
                continue
            hops = chain[: layer[r] - ls - 1]
            eu.append(hops[-1] if hops else s)
            ev.append(r)
            if not hops:
                e_down_w.append(1.0)
                e_up_w.append(1.0)
            else:
                e_down_w.append(PASSIVE_PULL)
                e_up_w.append(1.0 if len(hops) == len(chain) else BRANCH_PULL)
            routes.append((s, r, hyper_tensor[h], hops))
        if chain:
            chain_of[chain[0]] = chain
            chain_ends.append((chain, s, next(r for r in down if layer[r] == deepest)))
    total = len(node_layer)
    L = np.asarray(node_layer, dtype=np.int64)
    dummy = np.asarray(is_dummy, dtype=bool)
    n_layers = int(L.max()) + 1 if total else 0
    EU = np.asarray(eu, dtype=np.int64)
    EV = np.asarray(ev, dtype=np.int64)
    EW_down = np.asarray(e_down_w, dtype=np.float64)
    EW_up = np.asarray(e_up_w, dtype=np.float64)
    steps.step()

    # ---------------------------------------------------------------- crossing reduction
    start = np.lexsort((np.asarray(node_key), L))  # by layer, then topological rank
    bounds = np.searchsorted(L[start], np.arange(n_layers + 1))
    order: list[np.ndarray] = [start[bounds[i]: bounds[i + 1]] for i in range(n_layers)]
    pos = np.empty(total, dtype=np.float64)  # position in layer, scaled to (0, 1)
    for nodes in order:
        pos[nodes] = (np.arange(len(nodes)) + 0.5) / len(nodes)

    by_dst = np.argsort(L[EV], kind="stable")  # edges grouped by the layer of their lower end
    dst_bounds = np.searchsorted(L[EV][by_dst], np.arange(n_layers + 1))
    by_src = np.argsort(L[EU], kind="stable")
    src_bounds = np.searchsorted(L[EU][by_src], np.arange(n_layers + 1))
    ev_by_dst, eu_by_dst = EV[by_dst], EU[by_dst]
    eu_by_src, ev_by_src = EU[by_src], EV[by_src]
    local = np.zeros(total, dtype=np.int64)  # index of each node inside its layer's array
    for nodes in order:
        local[nodes] = np.arange(len(nodes))

    def sweep(downward: bool) -> None:
        layer_seq = range(1, n_layers) if downward else range(n_layers - 2, -1, -1)
        for count, lv in enumerate(layer_seq):
            if count % 256 == 255:
                steps.check()
            nodes = order[lv]
            k = len(nodes)
            if k < 2:
                continue
            if downward:
                a, b = dst_bounds[lv], dst_bounds[lv + 1]
                mine, other = ev_by_dst[a:b], eu_by_dst[a:b]
            else:
                a, b = src_bounds[lv], src_bounds[lv + 1]
                mine, other = eu_by_src[a:b], ev_by_src[a:b]
            idx = local[mine]
            sums = np.bincount(idx, weights=pos[other], minlength=k)
            cnt = np.bincount(idx, minlength=k)
            current = pos[nodes]
            bary = np.where(cnt > 0, sums / np.maximum(cnt, 1), current)
            new = nodes[np.lexsort((current, bary))]
            order[lv] = new
            local[new] = np.arange(k)
            pos[new] = (np.arange(k) + 0.5) / k

    for _ in range(ORDER_SWEEPS):
        sweep(True)
        steps.step()
        sweep(False)
        steps.step()

    # ---------------------------------------------------------------- coordinates
    widths = np.zeros(total, dtype=np.float64)
    heights = np.zeros(total, dtype=np.float64)
    for v in range(n):
        if kinds[v] == "op":
            widths[v] = _box_width(labels[v], details[v], badges[v])
            heights[v] = OP_NODE_H
        else:
            widths[v] = _terminal_width(labels[v], details[v])
            heights[v] = TERMINAL_H
    half_gap = np.where(dummy, DUMMY_HALF_GAP, NODE_HALF_GAP)
    stiff = np.where(dummy, DUMMY_WEIGHT, 1.0)
    pull_down = np.where(np.asarray(yields_down), YIELD_WEIGHT, stiff)
    pull_up = np.where(np.asarray(yields_up), YIELD_WEIGHT, stiff)
    x = np.zeros(total, dtype=np.float64)
    offsets = [_gap_offsets(nodes, widths, half_gap) for nodes in order]
    for nodes, c in zip(order, offsets):
        x[nodes] = c - c[-1] / 2 if len(c) else c

    local_u, local_v = local[EU], local[EV]  # the order is fixed from here on

    def plan(downward: bool, stiffness: np.ndarray, keep_joins: bool = False) -> tuple[np.ndarray, ...]:
        """Edge pulls normalised per node (in layer-sorted edge order), has-neighbours flag and
        least-squares weight per node, for one kind of pass (vectorised over the whole graph).

        A passive edge counts only for a node with no other edge that way; ``keep_joins``:
        nodes with two or more (non-passive) neighbours keep their x.
        """
        sel = by_dst if downward else by_src
        mine, ew = (EV, EW_down) if downward else (EU, EW_up)
        mine, ew = mine[sel], ew[sel]
        is_strong = ew > PASSIVE_PULL
        strong = np.bincount(mine, weights=is_strong.astype(np.float64), minlength=total)
        ew = np.where(is_strong | (strong[mine] == 0), ew, 0.0)
        cnt = np.bincount(mine, weights=ew, minlength=total)
        has = cnt > 0
        if keep_joins:
            has &= strong < 2
        degree = np.bincount(mine, minlength=total)
        weight = stiffness * np.where(has, 1.0 + np.sqrt(degree), 1.0)
        return ew / np.where(has, cnt, 1.0)[mine], has, weight

    plans = {"down": plan(True, pull_down), "up": plan(False, pull_up)}
    down_mine, down_other = local_v[by_dst], eu_by_dst
    up_mine, up_other = local_u[by_src], ev_by_src

    def place(downward: bool, name: str = "") -> None:
        layer_seq = range(1, n_layers) if downward else range(n_layers - 2, -1, -1)
        ewn, has_all, weight_all = plans[name or ("down" if downward else "up")]
        bounds_, mine_all, other_all = (dst_bounds, down_mine, down_other) if downward else \
            (src_bounds, up_mine, up_other)
        for count, lv in enumerate(layer_seq):
            if count % 256 == 255:
                steps.check()
            a, b = bounds_[lv], bounds_[lv + 1]
            nodes = order[lv]
            has = has_all[nodes]
            desired = np.bincount(mine_all[a:b], weights=x[other_all[a:b]] * ewn[a:b], minlength=len(nodes))
            if len(nodes) == 1:
                if has[0]:
                    x[nodes] = desired
                continue
            desired = np.where(has, desired, x[nodes])
            x[nodes] = _isotonic_place(desired, weight_all[nodes], offsets[lv])

    for _ in range(COORD_PASSES):
        place(True)
        steps.step()
        place(False)
        x -= _drift(x[:n], L[:n], n_layers)[L]
        steps.step()
    # the last downward pass: operator nodes under their inputs, long edges give way
    # (straightened afterwards where there is room)
    soft = np.where(dummy, SOFT_DUMMY_WEIGHT, 1.0)
    plans["final"] = plan(True, soft)
    place(True, "final")
    # Its lean (a join below a fan-out sits between its inputs, block after block) goes; then
    # a pass in which joins keep their place re-aligns every node under its only input, so
    # the correction ends up in the edges into joins, which are slanted anyway.
    x -= _drift(x[:n], L[:n], n_layers)[L]
    plans["settle"] = plan(True, soft, keep_joins=True)
    place(True, "settle")
    reach = widths / 2 + half_gap
    _straighten(chain_ends, order, x, reach)
    _snap(EU, EV, n, order, x, reach)
    steps.step()

    # ---------------------------------------------------------------- y, boxes, routes
    band_h = np.full(n_layers, OP_NODE_H)
    real_l = L[:n]
    np.maximum.at(band_h, real_l, heights[:n])
    band_top = np.concatenate(([0.0], np.cumsum(band_h + RANK_GAP)))[:n_layers] + MARGIN
    left_edge = float(np.min(x - np.where(dummy, 0.0, widths / 2))) if total else 0.0
    x += MARGIN - left_edge
    right = float(np.max(x + np.where(dummy, 0.0, widths / 2))) if total else 0.0
    top = band_top[real_l] + (band_h[real_l] - heights[:n]) / 2

    boxes: dict[str, NodeBox] = {}
    for v in range(n):
        boxes[names[v]] = NodeBox(
            name=names[v], kind=kinds[v], op_type=ops[v], label=labels[v], detail=details[v],
            x=float(x[v] - widths[v] / 2), y=float(top[v]), w=float(widths[v]), h=float(heights[v]),
            layer=int(L[v]), weights=weight_counts[v], params=param_counts[v], badge=badges[v],
        )
    xs = x.tolist()
    tops = band_top.tolist()
    bands = band_h.tolist()
    edges: list[EdgeRoute] = []
    chain_points: dict[int, list[tuple[float, float]]] = {}  # first dummy -> points down the chain
    for s, r, tensor, hops in routes:
        pts = [(xs[s], float(top[s] + heights[s]))]
        if hops:
            along = chain_points.get(hops[0])
            if along is None:
                along = []
                for d in chain_of[hops[0]]:
                    ld = node_layer[d]
                    along.append((xs[d], tops[ld]))
                    along.append((xs[d], tops[ld] + bands[ld]))
                chain_points[hops[0]] = along
            pts.extend(along[: 2 * len(hops)])
        pts.append((xs[r], float(top[r])))
        edges.append(EdgeRoute(src=names[s], dst=names[r], tensor=tensor, points=pts))
    reading = np.lexsort((x[:n], L[:n]))
    height = float(band_top[-1] + band_h[-1] + MARGIN) if n_layers else 2 * MARGIN
    steps.step()
    return GraphLayout(
        nodes=boxes, edges=edges, width=right + MARGIN, height=height, layers=n_layers,
        dummies=total - n, node_order=[names[v] for v in reading.tolist()],
    )


def _drift(x: np.ndarray, layer: np.ndarray, n_layers: int) -> np.ndarray:
    """Linear sideways drift of the layers' centres: the least-squares line through the mean
    x of each layer's nodes, as a shift per layer (scene units).

    A sweep moves each layer towards the one it has just placed, so a small offset inside a
    block of a deep repetitive graph (a 150-block encoder) adds up block after block and the
    drawing leans. Subtracting the line keeps it upright; inside a block the shift changes by
    the line's slope per layer (a fraction of a unit), so straight edges stay straight to the
    eye.
    """
    counts = np.bincount(layer, minlength=n_layers).astype(np.float64)
    if n_layers < 2:
        return np.zeros(n_layers)
    centre = np.bincount(layer, weights=x, minlength=n_layers) / np.maximum(counts, 1.0)
    depth = np.arange(n_layers, dtype=np.float64)
    w = counts > 0
    slope, _ = np.polyfit(depth[w], centre[w], 1)
    return slope * (depth - depth[w].mean())


def _straighten(
    chains: list[tuple[list[int], int, int]], order: list[np.ndarray], x: np.ndarray, reach: np.ndarray
) -> None:
    """Make each dummy chain vertical where its neighbours leave room (in place).

    A chain is cut into the longest runs that fit one x between the left and right
    neighbours of each of their dummies (``reach``: centre to the outer edge of a node's gap);
    each run goes straight down at the x of the run above it (the source, for the first),
    above the last reader (for the last run) or at its median x, whichever moves it least,
    a bend counting as ``BEND_COST`` units.
    """
    total = len(x)
    left = np.full(total, -1, dtype=np.int64)
    right = np.full(total, -1, dtype=np.int64)
    for nodes in order:
        if len(nodes) > 1:
            left[nodes[1:]] = nodes[:-1]
            right[nodes[:-1]] = nodes[1:]
    for chain, src, reader in chains:
        c = np.asarray(chain, dtype=np.int64)
        lt, rt = left[c], right[c]
        lo_each = np.where(lt >= 0, x[lt] + reach[lt] + reach[c], -np.inf)
        hi_each = np.where(rt >= 0, x[rt] - reach[rt] - reach[c], np.inf)
        above = float(x[src])
        start = 0
        while start < len(c):
            run_lo = np.maximum.accumulate(lo_each[start:])
            run_hi = np.minimum.accumulate(hi_each[start:])
            bad = np.flatnonzero(run_lo > run_hi)
            length = int(bad[0]) if bad.size else len(c) - start
            if length == 0:  # no room even for this dummy alone: leave it where it is
                above = float(x[c[start]])
                start += 1
                continue
            seg = c[start: start + length]
            lo, hi = float(run_lo[length - 1]), float(run_hi[length - 1])
            last = start + length == len(c)
            now = x[seg]
            candidates = [above, min(hi, max(lo, float(np.median(now))))]
            if last:
                candidates.append(float(x[reader]))
            best, best_cost = float(np.median(now)), np.inf
            for candidate in candidates:
                if not lo <= candidate <= hi:
                    continue
                cost = float(np.abs(now - candidate).sum()) + BEND_COST * (candidate != above)
                if last:
                    cost += BEND_COST * (candidate != float(x[reader]))
                if cost < best_cost:
                    best, best_cost = candidate, cost
            if best_cost < np.inf:
                x[seg] = best
            above = float(x[seg[-1]])
            start += length


def _snap(eu: np.ndarray, ev: np.ndarray, n: int, order: list[np.ndarray], x: np.ndarray, reach: np.ndarray) -> None:
    """Line up nodes that are a few units off their only neighbour (in place).

    Top down, a node whose only upper neighbour is one real node moves under it; bottom up,
    a node with no upper neighbour and one lower real neighbour moves above it. Only moves of
    less than ``SNAP_DISTANCE`` that keep the gaps to the node's left and right neighbours.
    """
    total = len(x)
    left = np.full(total, -1, dtype=np.int64)
    right = np.full(total, -1, dtype=np.int64)
    for nodes in order:
        if len(nodes) > 1:
            left[nodes[1:]] = nodes[:-1]
            right[nodes[:-1]] = nodes[1:]
    in_deg = np.bincount(ev, minlength=total)
    out_deg = np.bincount(eu, minlength=total)
    only_pred = np.full(total, -1, dtype=np.int64)
    only_pred[ev[in_deg[ev] == 1]] = eu[in_deg[ev] == 1]
    only_succ = np.full(total, -1, dtype=np.int64)
    only_succ[eu[out_deg[eu] == 1]] = ev[out_deg[eu] == 1]
    lefts, rights, reaches = left.tolist(), right.tolist(), reach.tolist()
    xs = x.tolist()

    def move(v: int, target: float) -> None:
        if abs(xs[v] - target) >= SNAP_DISTANCE or xs[v] == target:
            return
        lt, rt = lefts[v], rights[v]
        if lt >= 0 and target < xs[lt] + reaches[lt] + reaches[v]:
            return
        if rt >= 0 and target > xs[rt] - reaches[rt] - reaches[v]:
            return
        xs[v] = target

    for nodes in order:
        for v in nodes.tolist():
            u = int(only_pred[v])
            if v < n and 0 <= u < n and out_deg[v] <= 1:
                move(v, xs[u])
    for nodes in reversed(order):
        for v in nodes.tolist():
            w = int(only_succ[v])
            if v < n and in_deg[v] == 0 and 0 <= w < n:
                move(v, xs[w])
    x[:] = xs


def _gap_offsets(nodes: np.ndarray, widths: np.ndarray, half_gap: np.ndarray) -> np.ndarray:
    """Minimum centre offset of each node from the first one of its layer (scene units)."""
    if len(nodes) == 0:
        return np.zeros(0)
    reach = widths[nodes] / 2 + half_gap[nodes]  # centre to the edge of the node's own gap
    return np.concatenate(([0.0], np.cumsum(reach[:-1] + reach[1:])))


def _isotonic_place(desired: np.ndarray, weight: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Centres closest to ``desired`` (weighted least squares) with ``x[i+1]-x[i] >= gap``.

    ``offsets`` are the cumulative minimum gaps; with ``y = x - offsets`` the constraint is
    ``y`` non-decreasing: isotonic regression, solved by pool-adjacent-violators.
    """
    k = len(desired)
    if k == 1:
        return desired.copy()
    target = (desired - offsets).tolist()
    w = weight.tolist()
    # blocks: [weighted sum, weight, count]
    sums: list[float] = []
    ws: list[float] = []
    counts: list[int] = []
    for t, wi in zip(target, w):
        s_, w_, c_ = t * wi, wi, 1
        while sums and sums[-1] / ws[-1] >= s_ / w_:
            s_ += sums.pop()
            w_ += ws.pop()
            c_ += counts.pop()
        sums.append(s_)
        ws.append(w_)
        counts.append(c_)
    means = np.asarray(sums) / np.asarray(ws)
    return np.repeat(means, counts) + offsets
