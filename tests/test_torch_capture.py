"""recsketch.torch.capture on small models built here (no downloads), against graphs computed
by hand from the models' weights with torch.nn.functional and NumPy."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="recsketch.torch needs PyTorch (extra [torch])")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import recsketch as rs  # noqa: E402
from recsketch.torch import LayerEncoding, capture, layout  # noqa: E402


def split_unit(v):
    """The documented encoding, written out: [relu(v), relu(-v)] / norm."""
    x = np.concatenate([np.maximum(v, 0), np.maximum(-v, 0)])
    return x / np.linalg.norm(x)


def graph_of(g):
    """(module, attributes, [(input module, weight)]) per object, output [(module, weight)]."""
    d = g.to_dict()
    objs = d["objects"]
    return ([(o["module"], np.array(o["attributes"]),
              [(objs[k]["module"], w) for k, w in o["inputs"]]) for o in objs],
            [(objs[k]["module"], w) for k, w in d["output"]])


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3)
        self.conv2 = nn.Conv2d(3, 2, 3)
        self.fc = nn.Linear(2 * 2 * 2, 4)

    def forward(self, x):
        h = F.relu(self.conv1(x))
        h = self.conv2(h)
        return self.fc(h.flatten(1))


class TinyRes(nn.Module):
    """a -> b -> c, plus a skip a -> (c + a) -> head: head's input from a skips two levels."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        y = torch.relu(self.b(h))
        return self.head(self.c(y) + h)


class TwoBranch(nn.Module):
    """p and q read the input side by side and both feed head (same level: no skip)."""

    def __init__(self):
        super().__init__()
        self.p, self.q = nn.Linear(3, 2), nn.Linear(3, 2)
        self.p_act = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(torch.cat([self.p_act(self.p(x)), self.q(x)], dim=1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_tiny_cnn_modules_exact():
    model = TinyCNN()
    x = torch.randn(3, 1, 6, 6)
    cap = capture(model, x)
    assert cap.edge_source == "fx" and len(cap) == 3
    with torch.no_grad():
        c1 = F.conv2d(x, model.conv1.weight, model.conv1.bias)
        c2 = F.conv2d(F.relu(c1), model.conv2.weight, model.conv2.bias)
        fc = c2.flatten(1) @ model.fc.weight.T + model.fc.bias
    for b in range(3):
        objects, output = graph_of(cap[b])
        assert [o[0] for o in objects] == ["conv1", "conv2", "fc"]
        np.testing.assert_allclose(objects[0][1], split_unit(c1[b].mean(dim=(1, 2)).double().numpy()),
                                   atol=1e-6)
        np.testing.assert_allclose(objects[1][1], split_unit(c2[b].mean(dim=(1, 2)).double().numpy()),
                                   atol=1e-6)
        np.testing.assert_allclose(objects[2][1], split_unit(fc[b].double().numpy()), atol=1e-6)
        assert [o[2] for o in objects] == [[], [("conv1", 1.0)], [("conv2", 1.0)]]
        assert output == [("fc", 1.0)]
    sk = rs.Sketcher(256, family="orthogonal", seed=1)
    assert sk.sketch_many(cap).shape == (3, 256)
    assert sk.modules["conv1"].depth == 4 and sk.modules["conv1"].attribute_dim == 6


def test_residual_layout_drops_skip_edges_and_stays_valid():
    model = TinyRes()
    cap = capture(model, torch.randn(4, 4))
    lay = cap.layout
    assert lay.depth == {"head": 2, "c": 3, "b": 4, "a": 5}
    assert lay.dropped == (("a", "head"),)
    assert lay.producers["head"] == ("c",)
    for g in cap:
        objects, output = graph_of(g)
        assert [(o[0], o[2]) for o in objects] == [
            ("a", []), ("b", [("a", 1.0)]), ("c", [("b", 1.0)]), ("head", [("c", 1.0)])]
        assert {h.module: d for h, d in g.depths().items()} == lay.depth
    rs.Sketcher(512, family="orthogonal").sketch_many(cap)


def test_layout_rule_on_a_hand_dag():
    # x0 -> x1 -> x2 -> x3; x0 -> x3 (skip 2 levels); x1 -> x3 (skip 1); x4 sits beside x2
    layers = ["x0", "x1", "x2", "x4", "x3"]
    prods = {"x1": ["x0"], "x2": ["x1"], "x4": ["x1"], "x3": ["x2", "x4", "x0", "x1"]}
    lay = layout(layers, prods)
    assert lay.depth == {"x3": 2, "x2": 3, "x4": 3, "x1": 4, "x0": 5}
    assert lay.producers["x3"] == ("x2", "x4")
    assert set(lay.dropped) == {("x0", "x3"), ("x1", "x3")}
    assert lay.sinks == ("x3",)
    with pytest.raises(ValueError, match="runs after"):
        layout(["x0", "x1"], {"x0": ["x1"]})


def test_same_level_branches_share_weight_and_zero_output_renormalises():
    model = TwoBranch()
    with torch.no_grad():
        model.p.weight.copy_(torch.eye(2, 3))
        model.p.bias.zero_()
    x = torch.tensor([[1.0, 2.0, 0.5], [-1.0, -2.0, 0.5]])    # row 1: p_act is all zero
    cap = capture(model, x, layers=["p_act", "q", "head"])
    objects, _ = graph_of(cap[0])
    assert objects[-1][0] == "head" and objects[-1][2] == [("p_act", 0.5), ("q", 0.5)]
    objects, _ = graph_of(cap[1])
    assert [o[0] for o in objects] == ["q", "head"]
    assert objects[-1][2] == [("q", 1.0)]
    # a zero layer whose only consumer chain is cut: the layers below it leave the graph
    cap = capture(model, x, layers=["p", "p_act", "head"])
    assert cap.layout.producers["head"] == ("p_act",)
    assert [o[0] for o in graph_of(cap[1])[0]] == ["head"]
    assert [o[0] for o in graph_of(cap[0])[0]] == ["p", "p_act", "head"]


def test_attribution_weights_by_hand_and_parameters_untouched():
    model = TwoBranch()
    model.q.weight.requires_grad_(False)          # a partly frozen model stays as it was
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    x = torch.randn(5, 3)
    cap = capture(model, x, layers=["p_act", "q", "head"], weights="attribution")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        pa, q = F.relu(x @ model.p.weight.T + model.p.bias), x @ model.q.weight.T + model.q.bias
        logits = torch.cat([pa, q], 1) @ model.head.weight.T + model.head.bias
    W = model.head.weight.detach()
    for b in range(5):
        k = int(logits[b].argmax())
        sp = max(float(W[k, :2] @ pa[b]), 0.0)      # d logit / d p_act = W[k, :2]
        sq = max(float(W[k, 2:] @ q[b]), 0.0)
        objects, output = graph_of(cap[b])
        ins = dict(objects[-1][2])
        if sp + sq == 0:
            continue
        if sp > 0 and "p_act" in ins:
            assert ins["p_act"] == pytest.approx(sp / (sp + sq), rel=1e-5)
        assert ins["q"] == pytest.approx(sq / (sp + sq), rel=1e-5)


def test_units_exact_on_linear_chain():
    model = TinyRes()
    x = torch.randn(2, 4)
    cap = capture(model, x, layers=["b", "c"], objects="units", top_k=2)
    with torch.no_grad():
        h = torch.relu(model.a(x))
        yb = model.b(h)
        yc = model.c(torch.relu(yb))
    Wc = model.c.weight.detach().double().numpy()
    for r in range(2):
        cv, bv = yc[r].double().numpy(), yb[r].double().numpy()
        top_c = list(np.argsort(-np.abs(cv), kind="stable")[:2])
        top_b = list(np.argsort(-np.abs(bv), kind="stable")[:2])
        objects, output = graph_of(cap[r])
        assert [m for m, _ in output] == [f"c[{u}]" for u in top_c]
        assert [w for _, w in output] == [0.5, 0.5]
        by_module = {o[0]: o for o in objects}
        # d c_u / d b_j = W[u, j] relu'(b_j); gradient x input toward |c_u|, positive part
        relu_b = np.maximum(bv, 0)
        for u in top_c:
            contrib = np.sign(cv[u]) * Wc[u] * (bv > 0) * bv
            want = sorted([(contrib[j], j) for j in top_b if contrib[j] > 0], reverse=True)
            got = by_module[f"c[{u}]"][2]
            assert [m for m, _ in got] == [f"b[{j}]" for _, j in want]
            np.testing.assert_allclose(by_module[f"c[{u}]"][1], split_unit(cv), atol=1e-6)
        del relu_b
    assert cap.decode("c[0]", split_unit(np.array([1.0, -2, 0, 0, 0, 3]))).what == pytest.approx(
        np.array([1.0, -2, 0, 0, 0, 3]) / np.sqrt(14))


def test_units_conv_where_and_what():
    model = TinyCNN()
    x = torch.randn(2, 1, 6, 6)
    cap = capture(model, x, layers=["conv1", "conv2"], objects="units", top_k=2)
    with torch.no_grad():
        c1 = F.conv2d(x, model.conv1.weight, model.conv1.bias)
    enc = cap.encodings["conv1"]
    assert enc.grid == (4, 4) and enc.dim == 16 + 6
    for r in range(2):
        means = c1[r].mean(dim=(1, 2)).double().numpy()
        for obj in graph_of(cap[r])[0]:
            if not obj[0].startswith("conv1["):
                continue
            u = int(obj[0][6:-1])
            assert u in np.argsort(-np.abs(means), kind="stable")[:2]
            amap = c1[r, u].abs()
            where = F.adaptive_avg_pool2d(amap[None, None], (4, 4)).flatten().double().numpy()
            peak = int(amap.flatten().argmax())
            what = split_unit(c1[r, :, peak // 4, peak % 4].double().numpy())
            want = np.concatenate([where / np.linalg.norm(where), what]) / np.sqrt(2)
            np.testing.assert_allclose(obj[1], want, atol=1e-6)
    rs.Sketcher(256, family="orthogonal").sketch_many(cap)


class TinyTransformer(nn.Module):
    """Hugging Face-shaped outputs: hidden_states (L+1 of (B, T, D)), attentions (L of
    (B, H, T, T)); one single-matrix attention per layer, two heads."""

    def __init__(self, vocab=12, dim=4, layers=2):
        super().__init__()
        self.embeddings = nn.Embedding(vocab, dim)
        self.layer = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.q = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(layers))

    def forward(self, input_ids, attention_mask=None, output_attentions=False,
                output_hidden_states=False):
        h = self.embeddings(input_ids)
        hidden, atts = [h], []
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        for lin, q in zip(self.layer, self.q):
            qk = q(h).reshape(h.shape[0], h.shape[1], 2, -1).transpose(1, 2)
            scores = qk @ qk.transpose(2, 3)
            scores = scores.masked_fill(mask[:, None, None, :] == 0, -1e9)
            a = scores.softmax(-1)
            h = lin(a.mean(1) @ h)
            hidden.append(h)
            atts.append(a)
        return {"last_hidden_state": h, "hidden_states": tuple(hidden), "attentions": tuple(atts)}


def test_tokens_exact_against_attention():
    model = TinyTransformer()
    ids = torch.tensor([[1, 5, 7, 2, 0], [3, 3, 4, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    cap = capture(model, {"input_ids": ids, "attention_mask": mask}, objects="tokens",
                  weights="attention", top_k=2)
    with torch.no_grad():
        out = model(ids, mask, output_attentions=True, output_hidden_states=True)
    names = ["embeddings", "layer.0", "layer.1"]
    assert list(cap.layout.layers) == names
    for b in range(2):
        valid = mask[b].numpy().astype(bool)
        objects, output = graph_of(cap[b])
        top = [o for o in objects if o[0].startswith("layer.1:")]
        n_valid = int(valid.sum())
        assert sorted(m for m, _ in output) == sorted(f"layer.1:{int(t)}" for t in ids[b][valid])
        assert all(w == pytest.approx(1 / n_valid) for _, w in output)
        # each top token's inputs: top-2 keys of its head-averaged attention row, renormalised
        a = out["attentions"][1][b].double().mean(0).numpy()
        for t in np.flatnonzero(valid):
            row = a[t] * valid
            keys = np.argsort(-row, kind="stable")[:2]
            want = [(f"layer.0:{int(ids[b, k])}", row[k] / row[keys].sum()) for k in keys]
            obj = top[list(np.flatnonzero(valid)).index(t)]
            assert [m for m, _ in obj[2]] == [m for m, _ in want]
            # the capture averages the heads in float32
            assert [w for _, w in obj[2]] == pytest.approx([w for _, w in want], rel=1e-6)
            hs = out["hidden_states"][2][b, t].double().numpy()
            np.testing.assert_allclose(obj[1], split_unit(hs), atol=1e-6)
    sk = rs.Sketcher(64, family="orthogonal")
    S = sk.sketch_many(cap)
    assert S.shape == (2, 64)
    per_layer = capture(model, {"input_ids": ids, "attention_mask": mask}, objects="tokens",
                        top_k=2, token_modules=False)
    assert set(per_layer[0].modules) <= set(names)


def test_batches_give_the_same_graphs():
    model = TinyCNN()
    x = torch.randn(5, 1, 6, 6)
    one = capture(model, x, batch_size=64)
    many = capture(model, x, batch_size=2)
    # the same structure; attributes equal up to the rounding of a different conv batch size
    for a, b in zip(one, many):
        da, db = a.to_dict(), b.to_dict()
        assert da["output"] == db["output"]
        assert len(da["objects"]) == len(db["objects"])
        for oa, ob in zip(da["objects"], db["objects"]):
            assert (oa["module"], oa["inputs"]) == (ob["module"], ob["inputs"])
            np.testing.assert_allclose(oa["attributes"], ob["attributes"], atol=1e-6)


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > -1e9:
            h = h * 2
        return self.b(h)


def test_hook_order_fallback_and_fx_required():
    cap = capture(Branchy(), torch.randn(2, 3))
    assert cap.edge_source == "order" and "torch.fx" in cap.note
    assert cap.layout.producers == {"a": (), "b": ("a",)}
    with pytest.raises(ValueError, match="edges='fx'"):
        capture(Branchy(), torch.randn(2, 3), edges="fx")


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3)
        self.seen = []

    def forward(self, x):
        self.seen.append((torch.is_grad_enabled(), self.training))
        return self.lin(x)


def test_eval_mode_no_grad_and_mode_restored():
    m = nn.Sequential(Recorder(), nn.Linear(3, 2))
    m.train()
    capture(m, torch.randn(2, 3), layers=["0", "1"])
    assert m[0].seen == [(False, False)] and m.training and m[0].training
    m[0].seen.clear()
    capture(m, torch.randn(2, 3), layers=["0", "1"], weights="attribution")
    assert m[0].seen == [(True, False)] and m.training


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_inputs_of_the_wrong_width_name_the_layer_and_both_shapes():
    # The model's own RuntimeError came from deep inside torch ("mat1 and mat2 shapes cannot
    # be multiplied"): now a ValueError from it, naming the layer, what its parameters fix,
    # the tensor it got and the batch the model was called on.
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"layer '0' \(Linear\) expects 4 features on the "
                                         r"last axis, got an input of shape \(2, 5\); the "
                                         r"model was called on a batch of shape \(2, 5\)"):
        capture(mlp, torch.randn(2, 5))
    assert all_hooks(mlp) == 0
    cnn = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 2))
    with pytest.raises(ValueError, match=r"layer '0' \(Conv2d\) expects 3 channels on axis -3 "
                                         r"of a \(3\)- or \(4\)-axis input, got an input of "
                                         r"shape \(2, 1, 8, 8\)"):
        capture(cnn, torch.randn(2, 1, 8, 8), layers=["0", "3"])
    # a mismatch inside the model: the layer's own input beside the batch's shape
    with pytest.raises(ValueError, match=r"layer '3' \(Linear\) expects 72 features on the "
                                         r"last axis, got an input of shape \(2, 98\); the "
                                         r"model was called on a batch of shape \(2, 3, 9, 9\)"):
        capture(cnn, torch.randn(2, 3, 9, 9), layers=["0", "3"])
    assert all_hooks(cnn) == 0
    norm = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match=r"'0' \(Linear\) expects 4 features"):
        capture(norm, {"input": torch.randn(3, 6)})
    # the right width captures as before (the checks change nothing)
    got = capture(cnn, torch.randn(2, 3, 8, 8), layers=["0", "3"])
    assert len(got.graphs) == 2 and all_hooks(cnn) == 0


class FlatLinear(nn.Linear):
    """A Linear with its own forward that flattens its input first."""
    def forward(self, x):
        return super().forward(x.flatten(1))


class ChannelsFirstLayerNorm(nn.LayerNorm):
    """A LayerNorm over axis 1 of (N, C, H, W), as ConvNeXt's."""
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_subclasses_with_their_own_forward_capture_as_the_plain_forward_runs():
    # The input checks used to refuse these before their forward ran, though it runs fine
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), FlatLinear(3 * 4 * 4, 2))
    x = torch.rand(4, 1, 4, 4)
    cap = capture(m, x, layers=["0", "2"], edges="order")
    assert len(cap.graphs) == 4 and list(cap.layout.layers) == ["0", "2"]
    assert all_hooks(m) == 0
    n = nn.Sequential(nn.Conv2d(3, 5, 1), ChannelsFirstLayerNorm(5), nn.Conv2d(5, 2, 1))
    cap = capture(n, torch.rand(2, 3, 6, 6), layers=["0", "1", "2"], edges="order")
    assert len(cap.graphs) == 2 and list(cap.layout.layers) == ["0", "1", "2"]
    assert all_hooks(n) == 0
    # a subclass whose forward does fail on that input is still named by the ValueError,
    # chained to the model's own error
    with pytest.raises(ValueError, match=r"layer '2' \(FlatLinear\) expects 48 features .* "
                                         r"got an input of shape \(4, 3, 5, 4\).* failed in "
                                         r"that layer with RuntimeError") as info:
        capture(m, torch.rand(4, 1, 5, 4), layers=["0", "2"], edges="order")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert all_hooks(m) == 0


def test_a_misfit_layer_that_returned_is_not_blamed_for_a_later_error():
    m = nn.Sequential(nn.Conv2d(1, 3, 1), FlatLinear(3 * 4 * 4, 3), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        capture(m, torch.rand(2, 1, 4, 4), layers=["0", "1"], edges="order")
    assert all_hooks(m) == 0


class Fallback(nn.Module):
    # catches its first layer's error and goes on with the second, then fails on its own
    def __init__(self):
        super().__init__()
        self.b, self.a = nn.Linear(5, 3), nn.Linear(4, 3)

    def forward(self, x):
        try:
            h = self.b(x)
        except RuntimeError:
            h = self.a(x)
        raise KeyError(f"the model's own error after the fallback {h.shape}")


def test_a_misfit_layer_whose_error_the_model_caught_is_not_blamed():
    m = Fallback()
    with pytest.raises(KeyError, match="own error"):
        capture(m, torch.rand(2, 4), layers=["a"], edges="order")
    assert all_hooks(m) == 0


def test_hooks_removed_after_errors():
    m = nn.Sequential(nn.Linear(3, 3), Boom(), nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="boom") as info:
        capture(m, torch.randn(2, 3), layers=["0", "2"])
    assert all_hooks(m) == 0
    if hasattr(info.value, "__notes__"):            # Python >= 3.11: where it failed
        assert "last selected layer that ran: '0'" in info.value.__notes__[0]
    lin = nn.Linear(3, 3)
    twice = nn.Sequential(lin, nn.ReLU(), lin)
    with pytest.raises(ValueError, match="'0'.*more than once"):
        capture(twice, torch.randn(2, 3), layers=["0"], edges="order")
    assert all_hooks(twice) == 0


def test_errors_name_the_layer():
    m = TinyCNN()
    x = torch.randn(2, 1, 6, 6)
    with pytest.raises(ValueError, match="'nope'"):
        capture(m, x, layers=["conv1", "nope"])
    with pytest.raises(ValueError, match="'fc'.*signed=False"):
        capture(m, x, layers=["fc"], signed=False)
    with pytest.raises(ValueError, match="objects"):
        capture(m, x, objects="pixels")
    with pytest.raises(TypeError, match="inputs"):
        capture(m, "not a tensor")
    with pytest.raises(ValueError, match="attention"):
        capture(m, x, weights="attention")


def test_long_outputs_are_folded_and_decode_back():
    m = nn.Sequential(nn.Linear(8, 40))
    x = torch.randn(3, 8)
    cap = capture(m, x, layers=["0"], d_sketch=32)
    enc = cap.encodings["0"]
    assert (enc.width, enc.folded, enc.dim) == (40, 16, 32)
    assert len(cap[0].attributes(next(iter(cap[0])))) == 32
    rs.Sketcher(32, family="orthogonal").sketch_many(cap)


def test_fold_is_a_seeded_signed_count_sketch():
    enc = LayerEncoding("L", 50, True, 7, seed=3)
    cols = enc.fold(np.eye(50))                   # column i is the image of e_i
    assert np.all(np.count_nonzero(cols, axis=1) == 1)
    assert set(np.abs(cols[cols != 0])) == {1.0}
    sizes = np.count_nonzero(cols, axis=0)
    assert sizes.max() - sizes.min() <= 1
    assert np.array_equal(cols, LayerEncoding("L", 50, True, 7, seed=3).fold(np.eye(50)))
    assert not np.array_equal(cols, LayerEncoding("L", 50, True, 7, seed=4).fold(np.eye(50)))
    # inner products are preserved on average over seeds
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(50), rng.standard_normal(50)
    dots = [float(LayerEncoding("L", 50, True, 7, seed=s).fold(u[None])[0]
                  @ LayerEncoding("L", 50, True, 7, seed=s).fold(v[None])[0]) for s in range(2000)]
    assert abs(np.mean(dots) - u @ v) < 4 * np.std(dots) / np.sqrt(len(dots))
    # decode of a one-hot signal is exact at its coordinate
    e = np.zeros(50)
    e[11] = -2.0
    assert enc.decode(enc.encode(e[None]))[0, 11] == pytest.approx(-1.0)


def test_decode_undoes_the_split_up_to_scale():
    m = nn.Sequential(nn.Linear(5, 6))
    x = torch.randn(2, 5)
    cap = capture(m, x, layers=["0"])
    with torch.no_grad():
        y = m(x).double().numpy()
    for b in range(2):
        got = cap.decode("0", cap[b].attributes(next(iter(cap[b]))))
        np.testing.assert_allclose(got, y[b] / np.linalg.norm(y[b]), atol=1e-6)
    with pytest.raises(KeyError):
        cap.decode("other", np.ones(12))


def test_graph_add_takes_a_tensor_that_requires_grad():
    t = torch.tensor([0.6, 0.8], requires_grad=True)
    g = rs.Graph()
    h = g.add("m", t * 1.0)
    np.testing.assert_allclose(g.attributes(h), [0.6, 0.8])
    assert t.requires_grad


class InplaceNet(nn.Module):
    """Outputs changed in place right after their layers, as in a torchvision ResNet block:
    ReLU(inplace=True) on conv1's output, then conv2's output `+=` the block's input."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        h = self.act(self.conv1(x))
        out = self.conv2(h)
        out += h
        return self.fc(out.mean(dim=(2, 3)))


def test_in_place_ops_after_a_layer_do_not_change_its_attribute():
    # conv1's and conv2's attributes are their own outputs (signed split of the channel means),
    # whether or not gradients are tracked for attribution: the in-place ops come after them
    model = InplaceNet().eval()
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        c1 = F.conv2d(x, model.conv1.weight, model.conv1.bias)
        c2 = F.conv2d(torch.relu(c1), model.conv2.weight, model.conv2.bias)
        expect = {name: [split_unit(v) for v in c.mean(dim=(2, 3)).numpy()]
                  for name, c in (("conv1", c1), ("conv2", c2))}
    for weights in ("uniform", "attribution"):
        cap = capture(model, x, layers=["conv1", "conv2", "fc"], weights=weights)
        for row in range(2):
            objs, _ = graph_of(cap[row])
            for name in ("conv1", "conv2"):
                got = next(a for m, a, _ in objs if m == name)
                np.testing.assert_allclose(got, expect[name][row], rtol=1e-5, atol=1e-6)
    # and the model computes what it computes without the capture
    with torch.no_grad():
        plain = model(x)
    cap = capture(model, x, layers=["conv1", "fc"], weights="attribution")
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), plain.numpy(), rtol=1e-6)


def test_each_modules_mode_is_restored():
    model = TinyCNN()
    model.train()
    model.conv2.eval()            # a frozen part kept in eval while the rest trains
    capture(model, torch.randn(1, 1, 6, 6), layers=["conv1", "conv2", "fc"])
    assert model.training and model.conv1.training and model.fc.training
    assert not model.conv2.training


@pytest.mark.parametrize("seed", [-1, 1.5, True, 2**63, "0"])
def test_bad_seed_is_refused_naming_it(seed):
    with pytest.raises(ValueError, match="seed"):
        capture(TinyCNN().eval(), torch.randn(1, 1, 6, 6), seed=seed)


class NegativeLogits(nn.Module):
    """Every logit negative (log-probabilities, or a bias below zero): the predicted logit's
    gradient x input is negative, so no unit of the output layer has a positive attribution."""

    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(4, 6), nn.Linear(6, 3)
        with torch.no_grad():
            self.out.bias.fill_(-50.0)

    def forward(self, x):
        return self.out(torch.relu(self.a(x)))


def test_units_attribution_with_negative_outputs_ranks_by_activation():
    model = NegativeLogits().eval()
    x = torch.randn(2, 4)
    cap = capture(model, x, layers=["a", "out"], objects="units", weights="attribution",
                  top_k=2)
    with torch.no_grad():
        logits = model(x).numpy()
    assert (logits < 0).all()
    for row in range(2):
        objs, output = graph_of(cap[row])
        tops = sorted(int(m[len("out["):-1]) for m, _ in output)
        # the output layer's units: the two largest |activations| of its row
        assert tops == sorted(np.argsort(-np.abs(logits[row]))[:2].tolist())


class ShapeOnly(nn.Module):
    """b feeds o; a's output is only measured (its batch size), never read."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.o = nn.Linear(4, 3), nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.o(self.b(x).reshape(self.a(x).shape[0], -1))


def test_a_layer_whose_output_is_only_measured_does_not_feed_the_consumer():
    from recsketch.torch._dataflow import fx_producers
    producers, note = fx_producers(ShapeOnly(), ["a", "b", "o"])
    assert note == ""
    assert producers["o"] == ["b"]


class Wrapped(nn.Module):
    """The selected layers sit inside a torch.nn container that fx keeps whole by default."""

    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.block(x))


def test_fx_traces_into_containers_that_hold_selected_layers():
    from recsketch.torch._dataflow import fx_producers
    producers, note = fx_producers(Wrapped(), ["block.0", "block.2", "head"])
    assert note == ""
    assert producers == {"block.0": [], "block.2": ["block.0"], "head": ["block.2"]}


class WrappedTransformer(nn.Module):
    """A transformer inside a wrapper, as SentenceTransformer holds its model ("0.auto_model")."""

    def __init__(self):
        super().__init__()
        self.inner = nn.ModuleDict({"auto_model": TinyTransformer()})

    def forward(self, input_ids, attention_mask=None, **kw):
        return self.inner["auto_model"](input_ids, attention_mask, **kw)


def test_token_layer_names_are_module_paths_inside_a_wrapper():
    model = WrappedTransformer()
    ids = torch.tensor([[1, 5, 7, 2]])
    cap = capture(model, {"input_ids": ids}, objects="tokens", top_k=2)
    names = ["inner.auto_model.embeddings", "inner.auto_model.layer.0",
             "inner.auto_model.layer.1"]
    assert list(cap.layout.layers) == names
    assert set(names) <= set(dict(model.named_modules()))


class UsesWeightOnly(nn.Module):
    """``proj`` owns parameters but never runs as a module: its weight is used functionally."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
        self.proj, self.o = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.a(x)) + torch.relu(self.b(x))
        return self.o(nn.functional.linear(h, self.proj.weight))


def test_default_layers_that_never_run_keep_the_dataflow_edges():
    model = UsesWeightOnly()
    cap = capture(model, torch.randn(3, 8))
    # before, 'proj' (never a call in the fx graph) sent the whole capture to a hook-order chain
    assert cap.edge_source == "fx"
    assert list(cap.layout.layers) == ["a", "b", "o"]
    assert set(cap.layout.producers["o"]) == {"a", "b"}
    assert "'proj'" in cap.note and "never ran" in cap.note
    objects, output = graph_of(cap[0])
    assert sorted(m for m, _, _ in objects) == ["a", "b", "o"]


def test_an_explicit_layer_that_never_runs_is_an_error():
    with pytest.raises(ValueError, match="layer 'proj' did not run"):
        capture(UsesWeightOnly(), torch.randn(3, 8), layers=["a", "proj", "o"])


def test_gradients_under_inference_mode_are_refused_with_the_reason():
    model, x = UsesWeightOnly(), torch.randn(3, 8)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="inference_mode"):
            capture(model, x, weights="attribution")
        with pytest.raises(ValueError, match="inference_mode"):
            capture(model, x, objects="units")
        assert len(capture(model, x)) == 3          # no gradient needed: allowed
        made_inside = torch.randn(3, 8)
    # an inference tensor made inside the mode is accepted outside it
    cap = capture(model, made_inside, weights="attribution")
    ref = capture(model, made_inside.clone(), weights="attribution")
    assert [g.to_dict() for g in cap] == [g.to_dict() for g in ref]


def _splitmix64_reference(x):
    """splitmix64's finaliser in Python integers (independent of NumPy's uint64 arithmetic)."""
    m = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_fold_map_is_a_documented_hash_not_a_numpy_stream():
    # splitmix64's first output from state 0 is the published 0xE220A8397B1DCDAF
    assert _splitmix64_reference(0) == 0xE220A8397B1DCDAF
    import zlib
    width, folded, seed, layer = 50, 7, 3, "L"
    key = _splitmix64_reference(seed) ^ zlib.crc32(layer.encode())
    h = [_splitmix64_reference((key + i) % (1 << 64)) for i in range(width)]
    order = sorted(range(width), key=lambda i: (h[i] >> 1, i))
    rank = {i: r for r, i in enumerate(order)}
    want = np.zeros((width, folded))
    for i in range(width):
        want[i, rank[i] % folded] = 1.0 if h[i] & 1 else -1.0
    got = LayerEncoding(layer, width, True, folded, seed=seed).fold(np.eye(width))
    np.testing.assert_array_equal(got, want)
