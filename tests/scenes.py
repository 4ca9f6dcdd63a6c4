"""Seeded random scenes for the sketching and query tests."""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

import recsketch as rs


def unit(rng: np.random.Generator, m: int) -> np.ndarray:
    x = rng.random(m)
    return x / np.linalg.norm(x)


def random_dag(rng: np.random.Generator, depth: int = 4, width: int = 6, max_fan_in: int = 8,
               dims=(3, 16), dim: dict = None) -> Tuple[rs.Graph, tuple]:
    """A random communication DAG with objects at depths 2..depth, two modules per level,
    children shared by several parents, fan-in up to ``max_fan_in`` and input weights summing
    to at most 1. Pass the same ``dim`` dict to keep module attribute lengths across scenes.
    Returns the Graph and its plain description (objects, output)."""
    g = rs.Graph()
    below: List[rs.Handle] = []
    dim = {} if dim is None else dim
    for level in range(depth, 1, -1):
        n = max(int(rng.integers(1, width + 1)), -(-len(below) // max_fan_in))
        if level == 2:
            n = min(n, max_fan_in)
        picks: List[List[int]] = [[] for _ in range(n)]
        for k in range(len(below)):  # every lower object feeds at least one parent
            picks[k % n].append(k)
        row = []
        for k in range(n):
            free = [c for c in range(len(below)) if c not in picks[k]]
            room = max_fan_in - len(picks[k])
            extra = int(rng.integers(0, min(room, len(free)) + 1)) if free and room else 0
            picks[k] += [int(c) for c in rng.choice(free, size=extra, replace=False)] if extra else []
            order = rng.permutation(len(picks[k]))
            chosen = [picks[k][o] for o in order]
            w = rng.dirichlet(np.ones(len(chosen))) * rng.uniform(0.5, 1.0) if chosen else []
            module = f"L{level}m{k % 2}"
            m = dim.setdefault(module, int(rng.integers(dims[0], dims[1] + 1)))
            row.append(g.add(module, unit(rng, m), [(below[c], float(x)) for c, x in zip(chosen, w)]))
        below = row
    w = rng.dirichlet(np.ones(len(below)))
    g.set_output([(h, float(x)) for h, x in zip(below, w)])
    return g, describe(g)


def describe(g: rs.Graph):
    objects = [(h.module, g.attributes(h), [(c.index, w) for c, w in g.inputs(h)]) for h in g]
    output = [(c.index, w) for c, w in g.output]
    return objects, output


def room(rng: np.random.Generator, cat_w: float = 0.5, n_walls: int = 2, n_edges: int = 2):
    """The paper's room: a cat (with edges) and walls. Returns (graph, handles dict)."""
    g = rs.Graph()
    edges = [g.add("edge", unit(rng, 16)) for _ in range(n_edges)]
    cat = g.add("cat", unit(rng, 32), [(e, 1.0 / n_edges) for e in edges])
    wall_w = (1.0 - cat_w) / n_walls
    walls = [g.add("wall", unit(rng, 8)) for _ in range(n_walls)]
    g.set_output([(cat, cat_w)] + [(w, wall_w) for w in walls])
    return g, {"cat": cat, "edges": edges, "walls": walls}


def ordered_room(rng: np.random.Generator, order=("wall", "wall", "cat"),
                 dims: Tuple[int, int, int] = (16, 32, 8)):
    """Walls (w = .25 each) and a cat (w = .5, two edges of w = .5) at the output's input
    positions in ``order``; ``dims`` = attribute lengths of (edge, cat, wall). Returns (graph,
    handles: "wall" list, "cat", "edges")."""
    edge_dim, cat_dim, wall_dim = dims
    g = rs.Graph()
    edges = [g.add("edge", unit(rng, edge_dim)) for _ in range(2)]
    out, handles = [], {"wall": []}
    for name in order:
        if name == "cat":
            handles["cat"] = g.add("cat", unit(rng, cat_dim), [(e, 0.5) for e in edges])
            out.append((handles["cat"], 0.5))
        else:
            h = g.add("wall", unit(rng, wall_dim))
            handles["wall"].append(h)
            out.append((h, 0.25))
    g.set_output(out)
    handles["edges"] = edges
    return g, handles


def with_output_object(g: rs.Graph, module: str, attributes: np.ndarray, weight: float,
                       scale: float = 1.0) -> rs.Graph:
    """A copy of ``g`` whose output also takes a new object of ``module`` (no inputs) with
    ``weight``, the existing output weights multiplied by ``scale``: a grown graph built by
    hand, independently of recsketch.learned."""
    h = rs.Graph()
    hs: List[rs.Handle] = []
    for o in g:
        hs.append(h.add(o.module, g.attributes(o), [(hs[i.index], w) for i, w in g.inputs(o)]))
    out = [(hs[o.index], w * scale) for o, w in g.output]
    out.append((h.add(module, attributes), weight))
    h.set_output(out)
    return h
