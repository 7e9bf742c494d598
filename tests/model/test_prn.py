import pytest
import torch

from prn_edge.config import make_config
from prn_edge.model.prn import PRN, MultiSizeAttention, build_prn, model_info
from prn_edge.model.prototypes import ScalePrototypes, default_k, kmeans


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(1)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centers])
    found = kmeans(x, 3, seed=0)
    d = torch.cdist(centers, found).min(1).values
    assert (d < 0.1).all()


@pytest.mark.parametrize("mode", ["image", "patch"])
def test_nearest_prototype_matches_brute_force(mode):
    proto = ScalePrototypes(mode, 6, channels=5, hw=(4, 4))
    normals = torch.randn(20, 5, 4, 4)
    proto.fit(normals, seed=0)
    f = torch.randn(3, 5, 4, 4)
    got = proto.nearest(f)
    if mode == "image":
        flat = proto.protos
        idx = torch.cdist(f.flatten(1), flat).argmin(1)
        want = flat[idx].reshape(3, 5, 4, 4)
    else:
        vec = f.permute(0, 2, 3, 1).reshape(-1, 5)
        idx = torch.cdist(vec, proto.protos).argmin(1)
        want = proto.protos[idx].reshape(3, 4, 4, 5).permute(0, 3, 1, 2)
    assert torch.allclose(got, want)
    # residual of a prototype itself is zero; of normals it is normalized to mean one
    p0 = proto.protos[0].reshape(1, 5, 4, 4) if mode == "image" else proto.protos[0].view(1, 5, 1, 1).expand(1, 5, 4, 4)
    assert proto(p0.contiguous())[0].abs().max() < 1e-5
    assert abs(float(proto(normals)[0].mean()) - 1.0) < 1e-3


@pytest.mark.parametrize("mode", ["image", "patch"])
def test_soft_nearest_equals_argmin_away_from_ties(mode):
    g = torch.Generator().manual_seed(0)
    centers = 3 * torch.randn(6, 5, 4, 4, generator=g)  # well separated: no near ties
    normals = centers.repeat(4, 1, 1, 1) + 0.05 * torch.randn(24, 5, 4, 4, generator=g)
    hard = ScalePrototypes(mode, 6, channels=5, hw=(4, 4))
    hard.fit(normals, seed=0)
    soft = ScalePrototypes(mode, 6, channels=5, hw=(4, 4), softness=0.001)
    soft.load_state_dict(hard.state_dict())
    f = centers[:3] + 0.3 * torch.randn(3, 5, 4, 4, generator=g)
    assert torch.allclose(soft.nearest(f), hard.nearest(f), atol=1e-5)


def test_soft_nearest_is_continuous_across_a_tie():
    """Halfway between two prototypes the hard argmin jumps from one to the other for a last-bit change of the
    feature (what made PyTorch and ONNX Runtime maps differ by ~1e-3); the softmin blend moves smoothly."""
    p = ScalePrototypes("patch", 2, channels=4, hw=(1, 1), softness=0.001)
    a, b = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 0.0])
    p.protos.copy_(torch.stack([a, b]))
    p.sq_norm.copy_((p.protos ** 2).sum(1))
    hard = ScalePrototypes("patch", 2, channels=4, hw=(1, 1))
    hard.load_state_dict(p.state_dict())
    mid = (a + b) / 2
    for eps in (1e-7, 1e-6):
        f1 = (mid + eps * (a - b)).view(1, 4, 1, 1)
        f2 = (mid - eps * (a - b)).view(1, 4, 1, 1)
        assert (hard.nearest(f1) - hard.nearest(f2)).abs().max() == 1.0  # a jump
        assert (p.nearest(f1) - p.nearest(f2)).abs().max() < 1e-2  # Lipschitz ~1/(softness * distance)
    assert torch.allclose(p.nearest(mid.view(1, 4, 1, 1)).flatten(), mid, atol=1e-6)  # an exact tie blends 50/50


def test_default_k_is_about_ten_percent_and_bounded():
    assert default_k(200, "image") == 20
    assert default_k(5, "image") == 2 and default_k(10_000, "image") == 64
    assert default_k(10, "patch") == 64 and default_k(81, "patch") == 81 and default_k(10_000, "patch") == 256


def test_msa_token_roundtrip_is_exact():
    msa = MultiSizeAttention(dim=8, hw=(8, 8), patch_sizes=(1, 2, 4, 16), heads=2)
    assert msa.sizes == (1, 2, 4)  # a patch larger than the map is dropped
    x = torch.randn(3, 8, 8, 8)
    for p in msa.sizes:
        t = msa._tokens(x, p)
        assert t.shape == (3, 2, 4 * p * p, (8 // p) ** 2)
        assert torch.equal(msa._untokens(t, p), x)
    # a token really is one p x p patch of one head's channels (in some order: dot products do not care)
    t = msa._tokens(x, 2)
    assert sorted(t[1, 0, :, 0].tolist()) == sorted(x[1, :4, :2, :2].flatten().tolist())
    assert sorted(t[1, 1, :, 5].tolist()) == sorted(x[1, 4:, 2:4, 2:4].flatten().tolist())  # head 1, patch (1, 1)


def test_msa_keeps_the_patches_that_tile_the_map():
    # 96 px at stride 8 is a 12-cell side: an 8-cell patch cannot tile it (it crashed prn-edge at 96, 160, 224 px)
    assert MultiSizeAttention(dim=8, hw=(12, 12), patch_sizes=(2, 4, 8), heads=2).sizes == (2, 4)
    assert MultiSizeAttention(dim=8, hw=(3, 5), patch_sizes=(2, 4), heads=2).sizes == (1,)
    cfg = make_config("prn-edge", {"model": {"pretrained": False, "image_size": 96}}).model
    model, _ = build_prn(cfg, num_images=20)
    with torch.no_grad():
        assert model.eval().predict(torch.rand(1, 3, 96, 96))[0].shape == (1, 1, 96, 96)


def test_msa_equals_the_patch_major_token_layout():
    """The feature-major SpaceToDepth tokens compute the same attention as tokens built by a 7-D transpose
    (the layout trained checkpoints were made with)."""
    torch.manual_seed(0)
    msa = MultiSizeAttention(dim=8, hw=(8, 8), patch_sizes=(2, 4), heads=2).eval()
    x = torch.randn(2, 8, 8, 8)

    def reference(x):
        (h, w), d = msa.hw, msa.dim // msa.heads
        q, k, v = msa.qkv(x).split(msa.dim, dim=1)
        outs = []
        for p in msa.sizes:
            tok = lambda y: y.reshape(-1, msa.heads, d, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(
                -1, msa.heads, (h // p) * (w // p), d * p * p)  # noqa: E731
            attn = torch.softmax(tok(q) @ tok(k).transpose(-1, -2) * msa._scale(p), dim=-1)
            o = (attn @ tok(v)).reshape(-1, msa.heads, h // p, w // p, d, p, p).permute(0, 1, 4, 2, 5, 3, 6)
            outs.append(o.reshape(-1, msa.dim, h, w))
        return torch.relu(x + msa.proj(torch.cat(outs, 1)))

    with torch.no_grad():
        assert torch.allclose(msa(x), reference(x), atol=1e-5)


def _tiny_prn(mode="patch", **model) -> PRN:
    cfg = make_config("prn-tiny", {"model": {"prototype_mode": mode, **model}}).model
    model, _ = build_prn(cfg, num_images=20)
    model.fit_prototypes(torch.rand(20, 3, 64, 64))
    return model.eval()


@pytest.mark.parametrize("mode", ["image", "patch"])
def test_a_non_square_input_is_modelled_at_its_own_height_and_width(mode):
    cfg = make_config("prn-tiny", {"model": {"prototype_mode": mode, "image_size": [64, 128]}}).model
    model, _ = build_prn(cfg, num_images=20)
    model.fit_prototypes(torch.rand(20, 3, 64, 128))
    model.eval()
    assert [p.hw for p in model.prototypes] == [(16, 32), (8, 16), (4, 8)]
    if mode == "image":  # whole feature maps, height x width
        assert [p.protos.shape[1] for p in model.prototypes] == [p.channels * h * w for p, (h, w) in
                                                                 zip(model.prototypes, [(16, 32), (8, 16), (4, 8)])]
    with torch.no_grad():
        prob, score = model.predict(torch.rand(2, 3, 64, 128))
    assert prob.shape == (2, 1, 64, 128) and score.shape == (2,)


@pytest.mark.parametrize("mode,topk,k", [("image", 10, 10), ("patch", 10, 10), ("patch", 0, 41)])
def test_prn_map_is_full_resolution_and_batch_independent(mode, topk, k):
    model = _tiny_prn(mode, topk=topk)  # topk 0: the score pools 1% of the 64x64 map, 41 pixels
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        prob, score = model.predict(x)
        singles = [model.predict(x[i:i + 1]) for i in range(3)]
    assert prob.shape == (3, 1, 64, 64) and score.shape == (3,)
    assert ((prob >= 0) & (prob <= 1)).all()
    for i, (p, s) in enumerate(singles):
        assert torch.allclose(p[0], prob[i], atol=1e-5) and torch.allclose(s, score[i:i + 1], atol=1e-6)
    assert model.cfg.score_k == k
    assert torch.allclose(score, prob.flatten(1).sort(1, descending=True).values[:, :k].mean(1))


def test_head_trains_while_encoder_stays_put():
    model = _tiny_prn()
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    model.train()
    assert model.training and not model.encoder.training
    opt = torch.optim.AdamW(model.head_parameters(), 1e-2)
    x, y = torch.rand(4, 3, 64, 64), torch.zeros(4, 1, 64, 64)
    y[:, :, 20:30, 20:30] = 1
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k]), k


def test_variants_build_and_edge_fits_the_flops_budget():
    info = model_info(make_config("prn-edge").model)
    assert 0.5 < info["gflops"] <= 5.0
    assert info["params_encoder"] > 500_000  # the real EfficientNet-Lite0 stem to stride 16
    paper = model_info(make_config("prn-paper").model)
    assert paper["backbone"] == "resnet18" and paper["prototype_mode"] == "image"
    assert paper["gflops"] > info["gflops"]


def test_model_info_counts_the_distance_memory_a_trained_model_runs():
    """An unfitted model skips the distance map; info counts it as the artefact will run it: the joint memory's
    MatMul (stride 8 positions x centres x 40 + 112 values) instead of one per scale (x 40 at stride 8, x 112 at 16)."""
    info = {f: model_info(make_config("prn-edge", {"model": {"image_size": 128, "distance_features": f}}).model)
            for f in ("per_scale", "joint", "both")}
    m, p8, p16 = 4096, 16 * 16, 8 * 8  # model.distance_memory by default
    want = 2 * m * (p8 * (40 + 112) - p8 * 40 - p16 * 112) / 1e9
    assert info["joint"]["gflops"] - info["per_scale"]["gflops"] == pytest.approx(want, rel=0.02)
    # the centres an artefact carries: 40 + 112 values per centre per scale, 152 joined
    assert [info[f]["distance_memory_values"] for f in ("per_scale", "joint", "both")] == [
        m * 152, m * 152, 2 * m * 152]
    off = model_info(make_config("prn-edge", {"model": {"image_size": 128, "distance_memory": 0}}).model)
    assert off["distance_memory_values"] == 0


def _photo_batches(n=12, size=64):
    """n real photo crops (scikit-image's coffee and brick) as a batch in [0, 1]."""
    import numpy as np
    import skimage.data

    coffee, brick = skimage.data.coffee(), np.repeat(skimage.data.brick()[..., None], 3, 2)
    crops = [(coffee if i % 2 else brick)[17 * i:17 * i + size, 23 * i:23 * i + size] for i in range(n)]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


def test_distance_map_lights_up_a_foreign_patch_the_decoder_never_saw():
    torch.manual_seed(0)
    cfg = make_config("prn-tiny")
    model, _ = build_prn(cfg.model, num_images=20)
    model.eval()
    x = _photo_batches()
    model.fit_prototypes(x[:8])
    assert not model.fuses_distance  # not calibrated yet: predict is the decoder alone
    dec_prob, _ = model.predict(x[8:])
    assert torch.allclose(dec_prob, torch.sigmoid(model(x[8:])))
    cal = model.calibrate_distance([x[8:]])
    assert model.fuses_distance and cal["temp"] > 0
    normal_p = model.distance(model._run(x[8:])[1])
    assert float((normal_p > 0.5).float().mean()) <= 0.01  # the 99.9% quantile of held-out normals sits at 0.5
    odd = x[8:9].clone()
    checker = ((torch.arange(32)[:, None] // 2 + torch.arange(32)[None, :] // 2) % 2).float()
    odd[:, :, 16:48, 16:48] = torch.stack([checker, 1 - checker, checker])  # a 2-px colour checker: not a photo
    p = model.distance(model._run(odd)[1])[0, 0]
    assert float(p[20:44, 20:44].max()) > 0.5 and float(p[20:44, 20:44].mean()) > 4 * float(p[:, :8].mean())
    dec = torch.sigmoid(model(odd))
    model.cfg.distance_fusion = "mean"  # the map is the mean, and the score pools that map
    prob, score = model.predict(odd)
    assert torch.allclose(prob, 0.5 * (dec + p[None, None])) and torch.allclose(score, model.score(prob))
    assert abs(float(score) - float(model.score(dec))) > 1e-3  # not the decoder's score
    model.cfg.distance_fusion = "max"  # the map is the maximum, the score the decoder's alone
    prob, score = model.predict(odd)
    assert torch.equal(prob, torch.maximum(dec, p[None, None])) and torch.equal(score, model.score(dec))
    model.cfg.distance_fusion = "none"
    assert torch.equal(model.predict(odd)[0], dec)


def test_checkpoint_without_distance_buffers_loads_with_fusion_off(tmp_path):
    from prn_edge.model.checkpoint import load_model, save_checkpoint

    cfg = make_config("prn-tiny")
    model, _ = build_prn(cfg.model, num_images=20)
    model.fit_prototypes(_photo_batches(4))
    save_checkpoint(tmp_path / "m.pt", model, cfg, {})
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("distance.")}  # an older file
    del state["config"]["model"]["distance_features"]  # (written before the joint memory: per scale)
    del state["config"]["model"]["border_correction"]  # (and before the border correction: none)
    torch.save(state, tmp_path / "old.pt")
    loaded, _, _ = load_model(tmp_path / "old.pt")
    assert not loaded.fuses_distance and loaded.cfg.border_correction == 0 and not loaded.distance.border_px
    state["model"]["decoder.bogus"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(Exception, match="unexpected keys"):
        load_model(tmp_path / "bad.pt")


def _distance_logit(model, x):
    """The distance's calibrated logit written out: each part's (v - loc) / temp, the mean of the two parts."""
    d = model.distance
    parts = d.parts(model._run(x)[1])
    cals = [d] + ([d.joint_cal] if d.joint_cal is not None else [])
    assert len(parts) == len(cals)
    z = sum((v - c.loc) / c.temp for v, c in zip(parts, cals)) / len(cals)
    return z * d.border_gain - d.border if d.border_px else z


def test_both_distance_features_average_the_per_scale_and_the_joint_logits():
    """model.distance_features both: the per-scale memories and the joint memory, as each alone fits and calibrates
    them; the distance logit is the mean of the two calibrated logits. Without a distance memory it is per scale."""
    x = _photo_batches()
    models = {}
    for features in ("per_scale", "joint", "both"):
        torch.manual_seed(0)
        cfg = make_config("prn-tiny", {"model": {"distance_memory": 32, "distance_features": features,
                                                 "border_correction": 0}})  # (each would correct its own)
        models[features], _ = build_prn(cfg.model, num_images=20)
        models[features].eval()
        models[features].fit_prototypes(x[:8])
        models[features].calibrate_distance([x[8:]])
    both, per_scale, joint = models["both"], models["per_scale"], models["joint"]
    assert both.distance.joint_cal is not None and per_scale.distance.joint_cal is None
    assert torch.equal(both.prototypes[2].memory_t, per_scale.prototypes[2].memory_t)
    assert torch.equal(both.distance.memory.memory_t, joint.distance.memory.memory_t)
    assert float(both.distance.joint_cal.loc) == pytest.approx(float(joint.distance.loc))
    assert float(both.distance.loc) == pytest.approx(float(per_scale.distance.loc))
    with torch.no_grad():
        odd = x[8:].clone()
        odd[:, :, 8:24, 8:24] = torch.rand_like(odd[:, :, 8:24, 8:24])
        z_ps = per_scale.distance(per_scale._run(odd)[1], as_logit=True)
        z_j = joint.distance(joint._run(odd)[1], as_logit=True)
        z = both.distance(both._run(odd)[1], as_logit=True)
    assert not torch.allclose(z_ps, z_j, atol=1e-3)  # two different measures, so the mean is not either
    assert torch.allclose(z, 0.5 * (z_ps + z_j), atol=1e-5)
    cfg = make_config("prn-tiny", {"model": {"distance_memory": 0, "distance_features": "both"}})
    plain, _ = build_prn(cfg.model, num_images=20)
    assert plain.distance.memory is None and plain.distance.joint_cal is None and plain.distance.per_scale


def test_fused_map_reads_the_decoder_calibrated_on_normals_and_old_checkpoints_keep_the_sigmoid(tmp_path):
    """Fused maps ("mean", "logit") read the decoder calibrated on held-out normals; "none" its plain sigmoid."""
    from prn_edge.model.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    cfg = make_config("prn-tiny", {"model": {"distance_fusion": "mean"}})
    model, _ = build_prn(cfg.model, num_images=20)
    x = _photo_batches()
    model.fit_prototypes(x[:8])
    model.calibrate_distance([x[8:]])
    model.train()
    before = model.predict(x[8:])[0]
    assert not bool(model.decoder_cal.fitted)  # not calibrated: the plain sigmoid, as checkpoints before it
    with torch.no_grad():
        model.decoder.out.bias.fill_(6.0)  # a decoder whose logit 0 means nothing: every normal pixel p > 0.99
    cal = model.calibrate_decoder([x[8:]])
    assert model.training  # calibration leaves the training mode as it found it
    model.eval()
    with torch.no_grad():
        logits = model(x[8:])
        dec = model.decoder_cal.probability(logits)
        assert float((dec > 0.5).float().mean()) <= 0.002  # p = 0.5 at the normals' 99.9% quantile
        assert 0.005 < float(dec.median()) < 0.05  # ordinary normal texture near 0.02
        assert cal["temp"] >= model.decoder_cal.MIN_TEMP
        prob, score = model.predict(x[8:])
        dist = model.distance(model._run(x[8:])[1])
    assert torch.allclose(prob, 0.5 * (dec + dist)) and not torch.allclose(prob, before)
    assert float(torch.sigmoid(logits).min()) > 0.99  # what the uncalibrated fusion would have added everywhere
    model.cfg.distance_fusion = "logit"  # the mean of the two calibrated logits
    z_dist = _distance_logit(model, x[8:])
    z_dec = (logits - model.decoder_cal.loc) / model.decoder_cal.temp
    lprob, lscore = model.predict(x[8:])
    assert torch.allclose(lprob, torch.sigmoid(0.5 * (z_dec + z_dist)), atol=1e-6)
    assert torch.allclose(lscore, model.score(lprob))
    model.cfg.decoder_weight = 0.25  # the decoder's weight in the logit fusion, the distance's the rest
    assert torch.allclose(model.predict(x[8:])[0], torch.sigmoid(0.25 * z_dec + 0.75 * z_dist), atol=1e-6)
    model.cfg.decoder_weight = 0.0
    assert torch.allclose(model.predict(x[8:])[0], torch.sigmoid(z_dist), atol=1e-6)
    model.cfg.decoder_weight = 0.5
    # model.map_decoder "gated": in the map the decoder's weight at a pixel is decoder_weight times the distance's
    # probability there; the score pools the plain fusion as before
    model.cfg.map_decoder = "gated"
    gprob, gscore = model.predict(x[8:])
    p_dist = torch.sigmoid(z_dist)
    assert torch.allclose(gprob, torch.sigmoid(z_dist + 0.5 * p_dist * (z_dec - z_dist)), atol=1e-6)
    assert torch.allclose(gscore, lscore) and not torch.allclose(gscore, model.score(gprob))
    low = p_dist < p_dist.median()  # where the distance finds normal texture, the decoder moves the map less
    moved = lambda m: (torch.logit(m.double()) - z_dist.double()).abs()[low]  # noqa: E731
    assert float(moved(gprob).mean()) < 0.1 * float(moved(lprob).mean())
    # model.map_contrast: the map's logit is pushed away from its image's mean, the score pools the plain fusion
    model.cfg.map_contrast = 1.0
    m = z_dist + 0.5 * p_dist * (z_dec - z_dist)  # (gated)
    cprob, cscore = model.predict(x[8:])
    assert torch.allclose(cprob, torch.sigmoid(2 * m - m.mean(dim=(2, 3), keepdim=True)), atol=1e-5)
    assert torch.allclose(cscore, lscore)
    model.cfg.map_decoder = "weighted"
    m = 0.5 * (z_dec + z_dist)
    cprob, cscore = model.predict(x[8:])
    assert torch.allclose(cprob, torch.sigmoid(2 * m - m.mean(dim=(2, 3), keepdim=True)), atol=1e-5)
    assert torch.allclose(cscore, lscore)
    low, high = lprob.flatten(1).argmin(1), lprob.flatten(1).argmax(1)
    for i in range(len(lprob)):  # within an image the order of pixels is the fused map's
        assert cprob[i].flatten()[low[i]] <= lprob[i].flatten()[low[i]] + 1e-6
        assert cprob[i].flatten()[high[i]] >= lprob[i].flatten()[high[i]] - 1e-6
        assert torch.equal(cprob[i].flatten().argsort()[-20:].sort().values,
                           lprob[i].flatten().argsort()[-20:].sort().values)
    model.cfg.map_contrast = 0.0
    assert torch.equal(model.predict(x[8:])[0], lprob)  # the default: the score's map
    model.cfg.distance_fusion = "none"  # the paper's map stays the decoder's own sigmoid
    assert torch.equal(model.predict(x[8:])[0], torch.sigmoid(logits))
    model.cfg.distance_fusion = "mean"
    save_checkpoint(tmp_path / "m.pt", model, cfg, {})
    loaded, _, _ = load_model(tmp_path / "m.pt")
    assert torch.allclose(loaded.predict(x[8:])[0], prob)  # the calibration travels in the checkpoint
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("decoder_cal.")}
    torch.save(state, tmp_path / "old.pt")
    old, _, _ = load_model(tmp_path / "old.pt")
    with torch.no_grad():
        assert torch.allclose(old.predict(x[8:])[0], 0.5 * (torch.sigmoid(logits) + dist), atol=1e-6)


def test_distance_memory_is_the_distance_to_its_nearest_centre_and_leaves_the_residual_alone():
    g = torch.Generator().manual_seed(3)
    normals = torch.randn(12, 5, 4, 4, generator=g)
    plain = ScalePrototypes("patch", 4, channels=5, hw=(4, 4))
    plain.fit(normals, seed=0)
    mem = ScalePrototypes("patch", 4, channels=5, hw=(4, 4), memory=32)
    mem.fit(normals, seed=0)
    f = torch.randn(2, 5, 4, 4, generator=g)
    residual, dist = mem(f)
    assert torch.allclose(residual, plain(f)[0])  # the head reads the same residual as without a memory
    centres = mem.memory_t.T
    assert len(torch.unique(centres, dim=0)) == 32  # 192 vectors, 4 per centre: 48 > 32 distinct centres
    vec = f.permute(0, 2, 3, 1).reshape(-1, 5)
    want = torch.cdist(vec, centres).min(1).values ** 2 * mem.memory_scale
    assert torch.allclose(dist.flatten(), want, rtol=1e-4, atol=1e-5)
    assert abs(float(mem(normals)[1].mean()) - 1.0) < 1e-3  # normalized like the prototype distance
    # finer than the 4 prototypes: the normals sit closer to their nearest memory centre
    raw_plain = plain(normals)[1] / plain.res_scale * plain.channels
    assert float((dist_raw := mem(normals)[1] / mem.memory_scale).mean()) < 0.8 * float(raw_plain.mean())
    assert float(dist_raw.min()) >= 0
    assert not ScalePrototypes("image", 4, channels=5, hw=(4, 4), memory=32).has_memory  # per-image distance


def test_prn_keeps_a_distance_memory_where_the_map_reads_one():
    cfg = make_config("prn-tiny", {"model": {"distance_memory": 64, "distance_scales": [2],
                                             "distance_features": "per_scale"}})
    model, _ = build_prn(cfg.model, num_images=20)
    assert [p.has_memory for p in model.prototypes] == [False, False, True]
    assert model.prototypes[2].memory_t.shape[1] == 64 and model.distance.memory is None
    # joint: one memory of the joined distance scales (strides 8 and 16), none per scale
    model, _ = build_prn(make_config("prn-tiny", {"model": {"distance_memory": 64, "distance_features": "joint"}}
                                     ).model, num_images=20)
    chans = model.encoder.channels
    assert not any(p.has_memory for p in model.prototypes)
    assert tuple(model.distance.memory.memory_t.shape) == (chans[2] + chans[3], 64)
    assert model.distance.memory.factors == (1, 2)
    with pytest.raises(Exception, match="distance_features"):
        make_config("prn-tiny", {"model": {"distance_features": "joined"}})
    for other in ({"distance_memory": 0}, {"prototype_mode": "image"}, {"distance_fusion": "none"}):
        with pytest.raises(Exception, match="distance_features=joint needs a distance memory"):  # not ignored
            make_config("prn-tiny", {"model": {"distance_features": "joint", **other}})
    cfg = make_config("prn-tiny", {"model": {"distance_memory": 64, "distance_fusion": "none"}})
    assert not any(p.has_memory for p in build_prn(cfg.model, num_images=20)[0].prototypes)  # nothing reads it
    with pytest.raises(Exception, match="distance_memory"):
        make_config("prn-tiny", {"model": {"distance_memory": -1}})


def test_joint_memory_is_the_distance_to_the_nearest_centre_of_the_joined_averaged_features():
    import torch.nn.functional as F

    from prn_edge.model.prototypes import JointMemory

    g = torch.Generator().manual_seed(4)
    normals = [torch.randn(10, 3, 8, 8, generator=g), torch.randn(10, 5, 4, 4, generator=g)]
    mem = JointMemory((3, 5), (1, 2), size=48, hw=(8, 8))
    mem.fit(normals, seed=0)
    f = [torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 5, 4, 4, generator=g)]
    joined = torch.cat([f[0], F.interpolate(f[1], scale_factor=2, mode="bilinear", align_corners=False)], 1)
    vec = F.avg_pool2d(joined, 3, 1, 1, count_include_pad=False).permute(0, 2, 3, 1).reshape(-1, 8)
    want = torch.cdist(vec, mem.memory_t.T).min(1).values ** 2 * mem.memory_scale
    assert torch.allclose(mem(f).flatten(), want, rtol=1e-4, atol=1e-5)
    assert abs(float(mem(normals).mean()) - 1.0) < 1e-3  # the fitted normals average one


def test_joint_memory_flags_a_mix_of_scales_that_no_normal_place_shows():
    """Normal places are (fine a, coarse x) and (fine b, coarse y): a place of fine a in coarse y passes a memory
    per scale (each part was seen) and not the joint one."""
    from prn_edge.model.prototypes import JointMemory

    a, b, x, y = (torch.full((1, c, s, s), v) for c, s, v in ((3, 8, 1.0), (3, 8, -1.0), (5, 4, 2.0), (5, 4, -2.0)))
    normals = [torch.cat([a, b]), torch.cat([x, y])]
    joint = JointMemory((3, 5), (1, 2), size=8, hw=(8, 8))
    joint.fit(normals)
    per_scale = [ScalePrototypes("patch", 2, channels=c, hw=(s, s), memory=8) for c, s in ((3, 8), (5, 4))]
    for p, n in zip(per_scale, normals):
        p.fit(n)
    mixed = [a, y]
    assert all(float(p(m)[1].max()) < 1e-4 for p, m in zip(per_scale, mixed))  # each scale alone: seen
    assert float(joint([a, x]).max()) < 1e-3 and float(joint([b, y]).max()) < 1e-3
    assert float(joint(mixed)[..., 2:6, 2:6].min()) > 3.0  # joined: nowhere near a normal place


def _fitted_checkpoint(path, model_overrides: dict, x: torch.Tensor):
    """A prn-tiny with its prototypes fitted on x[:4] and its distance calibrated on x[4:], saved to `path`."""
    from prn_edge.model.checkpoint import save_checkpoint

    cfg = make_config("prn-tiny", {"model": model_overrides})
    model, _ = build_prn(cfg.model, num_images=20)
    model.fit_prototypes(x[:4])
    model.calibrate_distance([x[4:]])
    save_checkpoint(path, model, cfg, {})
    return model


def test_checkpoint_from_before_the_joint_memory_keeps_one_memory_per_scale(tmp_path):
    from prn_edge.model.checkpoint import load_model

    x = _photo_batches(6)
    model = _fitted_checkpoint(tmp_path / "m.pt", {"distance_memory": 32, "distance_features": "per_scale"}, x)
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    del state["config"]["model"]["distance_features"]  # as written before the option existed
    torch.save(state, tmp_path / "old.pt")
    loaded, lcfg, _ = load_model(tmp_path / "old.pt")
    assert lcfg.model.distance_features == "per_scale" and loaded.distance.memory is None
    assert torch.allclose(loaded.predict(x[4:])[0], model.eval().predict(x[4:])[0])
    # and a joint one comes back joint, with its memory and calibration
    model = _fitted_checkpoint(tmp_path / "j.pt", {"distance_memory": 32, "distance_features": "joint"}, x)
    loaded, lcfg, _ = load_model(tmp_path / "j.pt")
    assert lcfg.model.joint_memory and torch.equal(loaded.distance.memory.memory_t, model.distance.memory.memory_t)
    assert torch.allclose(loaded.predict(x[4:])[0], model.eval().predict(x[4:])[0])
    state = torch.load(tmp_path / "j.pt", weights_only=True)
    state["model"] = {k: v for k, v in state["model"].items() if not k.startswith("distance.memory.")}
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(Exception, match="distance.memory"):  # not loaded as an all-zero memory
        load_model(tmp_path / "cut.pt")


def test_checkpoint_from_before_the_map_decoder_keeps_the_scores_map_and_a_saved_choice_travels(tmp_path):
    from prn_edge.model.checkpoint import load_model, save_checkpoint

    x = _photo_batches(6)
    model = _fitted_checkpoint(tmp_path / "m.pt", {"map_decoder": "gated"}, x)
    with torch.no_grad():  # a calibrated decoder whose part of the map differs from the distance's
        model.decoder_cal.calibrate(model.eval()._run(x[4:])[0] * 0.1)
    save_checkpoint(tmp_path / "m.pt", model, make_config("prn-tiny", {"model": {"map_decoder": "gated"}}), {})
    loaded, lcfg, _ = load_model(tmp_path / "m.pt")
    assert lcfg.model.map_gated
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    del state["config"]["model"]["map_decoder"]  # as written before the option existed
    torch.save(state, tmp_path / "old.pt")
    old, ocfg, _ = load_model(tmp_path / "old.pt")
    assert ocfg.model.map_decoder == "weighted" and not ocfg.model.map_gated
    with torch.no_grad():
        new_map, new_score = loaded.predict(x[4:])
        old_map, old_score = old.predict(x[4:])
    assert torch.allclose(new_score, old_score)  # the score is the same fusion in both
    assert torch.allclose(old.score(old_map), old_score)  # the old map is the one its score pools
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["config"]["model"].pop("map_contrast")  # written before the map contrast: the map as fused
    torch.save(state, tmp_path / "older.pt")
    _, older_cfg, _ = load_model(tmp_path / "older.pt")
    assert older_cfg.model.map_contrast == 0.0
    assert not torch.allclose(new_map, old_map)


def test_checkpoint_from_before_the_distance_memory_loads_without_one(tmp_path):
    from prn_edge.model.checkpoint import load_model

    x = _photo_batches(6)
    model = _fitted_checkpoint(tmp_path / "m.pt", {"distance_memory": 0}, x)
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    del state["config"]["model"]["distance_memory"]  # as written before the option existed
    torch.save(state, tmp_path / "old.pt")
    loaded, lcfg, _ = load_model(tmp_path / "old.pt")
    assert lcfg.model.distance_memory == 0 and not any(p.has_memory for p in loaded.prototypes)
    assert torch.allclose(loaded.predict(x[4:])[0], model.eval().predict(x[4:])[0])


def test_kmeans_draws_many_seeds_per_round_for_a_large_memory_at_the_same_inertia():
    from prn_edge.model import prototypes

    g = torch.Generator().manual_seed(2)
    centers = 3 * torch.randn(60, 8, generator=g)  # overlapping clusters, like patch features
    x = torch.relu(centers[torch.randint(60, (3000,), generator=g)] + torch.randn(3000, 8, generator=g))

    def inertia(c):
        return float(torch.cdist(x, c).min(1).values.pow(2).mean())

    one_by_one = kmeans(x, 120, seed=0)  # 120 <= SEED_ROUNDS: classic k-means++
    old, prototypes.SEED_ROUNDS = prototypes.SEED_ROUNDS, 8  # 15 seeds per round
    try:
        batched = kmeans(x, 120, seed=0)
    finally:
        prototypes.SEED_ROUNDS = old
    assert batched.shape == (120, 8) and not torch.equal(batched, one_by_one)
    assert inertia(batched) < 1.05 * inertia(one_by_one)
    assert inertia(batched) < 0.7 * inertia(x[torch.randperm(3000, generator=g)[:120]])  # far better than random


@pytest.mark.parametrize("features,memory,expected", [
    ("per_scale", 1024, "1024 centres per scale, strides 8+16 (model.distance_features per_scale)"),
    ("joint", 1024, "1024 centres of the stride 8+16 features joined (model.distance_features joint)"),
    ("both", 64, "64 centres per scale, strides 8+16, and 64 of those features joined, the mean of the two"),
    ("both", 0, "the prototypes, strides 8+16"),  # without a distance memory, both is the per-scale prototypes
])
def test_info_names_what_the_distance_measures_against(features, memory, expected):
    """`info` of a checkpoint and of an artefact: the distance text follows model.distance_features."""
    from prn_edge.describe import _distance_text

    assert _distance_text((1, 2), memory, features).startswith(expected)


def _border_model(px=8, hw=64):
    cfg = make_config("prn-tiny", {"model": {"image_size": hw, "border_correction": px}})
    model, _ = build_prn(cfg.model, num_images=20)
    return model.eval()


def test_border_correction_removes_the_normals_excess_at_the_border_and_recalibrates():
    """The held-out normals' logits rise towards the border (as the encoder's zero padding makes them on real
    photos): the correction takes the excess off and re-calibrates, so the border no longer holds the normals'
    top values and an excess in the middle still stands out; a border quieter than the middle is left alone."""
    from prn_edge.model.prn import border_depth

    torch.manual_seed(0)
    d = _border_model().distance
    depth = border_depth(64, 64).float()
    rise = torch.clamp(8 - depth, min=0) * 0.5  # up to +4 logits on the outermost ring, none from 8 px in
    z = torch.randn(12, 1, 64, 64) * 0.5 + rise
    info = d.fit_border(z)
    assert info["px"] == 8 and info["profile"][0] == pytest.approx(4.0, abs=0.3)
    assert info["profile"][7] == pytest.approx(0.5, abs=0.3)
    out = z * d.border_gain - d.border
    ring = depth < 2  # 12% of the pixels

    def ring_share(v):  # the share of the top 1% of values that lie on the ring
        top = v > torch.quantile(v.flatten(), 0.99)
        return float(top[:, :, ring].sum() / top.sum())

    assert ring_share(z) > 0.9 and ring_share(out) < 0.2
    assert float((out > 0).float().mean()) == pytest.approx(0.001, abs=0.001)  # p = 0.5 at the 99.9% quantile again
    inner = depth >= 8
    assert torch.allclose(out[:, :, inner], (z[:, :, inner] - info["loc"]) / info["temp"], atol=1e-5)
    quiet = torch.randn(12, 1, 64, 64) * 0.5 - rise  # a wall around the part: quieter at the border
    info = d.fit_border(quiet)
    assert max(info["profile"]) < 0.1  # only an excess is removed
    out = quiet * d.border_gain - d.border
    assert torch.allclose(out, (quiet - info["loc"]) / info["temp"], atol=1e-5)


def test_border_correction_is_fitted_with_the_distance_and_is_at_most_a_quarter_of_the_input():
    x = _photo_batches()
    model = _border_model(px=32)  # a 64 px input: 16 px at most
    assert model.distance.border_px == 16 and model.cfg.border_px == 16
    model.fit_prototypes(x[:8])
    assert float(model.distance.border.abs().max()) == 0 and float(model.distance.border_gain) == 1
    cal = model.calibrate_distance([x[8:]])
    assert cal["border"]["px"] == 16 and len(cal["border"]["profile"]) == 16
    assert float(model.distance.border.abs().max()) > 0  # fitted: a map of constants
    with torch.no_grad():
        z = model.distance(model._run(x[8:])[1], as_logit=True)
    assert torch.allclose(z, _distance_logit(model, x[8:]), atol=1e-5)
    off = _border_model(px=0)
    assert not off.distance.border_px and not hasattr(off.distance, "border")
    with pytest.raises(Exception, match="border_correction"):
        make_config("prn-tiny", {"model": {"border_correction": -1}})
    with pytest.raises(Exception, match="border_correction"):
        make_config("prn-tiny", {"model": {"border_correction": "wide"}})
