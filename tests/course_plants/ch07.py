"""Chapter 7: planted-wrong submissions."""

PLANTS = [
    {
        "name": "group_norm_unbiased_variance",
        # torch's default var divides by n - 1; group normalisation uses the biased one
        "answers": {"ex7_1a_answer": '''\
def my_group_norm(h, groups):
    b = h.shape[0]
    hg = h.reshape(b, groups, -1)
    mean = hg.mean(-1, keepdim=True)
    var = hg.var(-1, keepdim=True)
    return ((hg - mean) / torch.sqrt(var + 1e-5)).reshape(h.shape)
'''},
        "fails": ["ex7_1a_check", "ex7_1c_check"],  # (c) builds on my_group_norm
    },
    {
        "name": "group_norm_through_torch",
        # hands the work to torch, which the check of (a) and (c) switches off
        "answers": {"ex7_1a_answer": '''\
def my_group_norm(h, groups):
    return F.group_norm(h, groups, eps=1e-5)
'''},
        "fails": ["ex7_1a_check", "ex7_1c_check"],
    },
    {
        "name": "attention_unscaled_scores",
        # forgets the 1 / sqrt(C / heads) in front of Q K^T
        "answers": {"ex7_1b_answer": '''\
def my_self_attention(x, w_qkv, heads):
    b, n, c = x.shape
    q, k, v = (x @ w_qkv.T).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
    return (weights @ v).transpose(1, 2).reshape(b, n, c)
'''},
        "fails": ["ex7_1b_check"],
    },
    {
        "name": "attention_through_multihead_module",
        # right numbers, but from nn.MultiheadAttention, which the check switches off
        "answers": {"ex7_1b_answer": '''\
def my_self_attention(x, w_qkv, heads):
    c = x.shape[-1]
    mha = torch.nn.MultiheadAttention(c, heads, bias=False, batch_first=True).to(x.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(w_qkv)
        mha.out_proj.weight.copy_(torch.eye(c, dtype=x.dtype))
        return mha(x, x, x, need_weights=False)[0]
'''},
        "fails": ["ex7_1b_check"],
    },
    {
        "name": "resblock_shift_before_scale",
        # reads the FiLM outputs in the wrong order: shift first, then scale
        "answers": {"ex7_1c_answer": '''\
def my_resblock(x, emb, params, groups):
    p = params

    def norm(h, name):
        return (my_group_norm(h, groups) * p[name + ".weight"][:, None, None]
                + p[name + ".bias"][:, None, None])

    h = F.conv2d(F.silu(norm(x, "norm1")), p["conv1.weight"], p["conv1.bias"], padding=1)
    film = F.silu(emb) @ p["film.weight"].T + p["film.bias"]
    shift, scale = film[:, :, None, None].chunk(2, dim=1)
    h = norm(h, "norm2") * (1 + scale) + shift
    h = F.conv2d(F.silu(h), p["conv2.weight"], p["conv2.bias"], padding=1)
    if "skip.weight" in p:
        x = F.conv2d(x, p["skip.weight"], p["skip.bias"])
    return x + h
'''},
        "fails": ["ex7_1c_check"],
    },
    {
        "name": "calls_dmlib_resblock",
        "calls_dmlib": True,
        # loads the weights into dmlib's ResBlock, which Exercise 7.1 switches off
        "answers": {"ex7_1c_answer": '''\
def my_resblock(x, emb, params, groups):
    c_out, c_in = params["conv1.weight"].shape[:2]
    block = nn.unet.ResBlock(c_in, c_out, params["film.weight"].shape[1], groups, 0.0)
    block.load_state_dict(params)
    with torch.no_grad():
        return block.double().eval()(x, emb)
'''},
        "fails": ["ex7_1c_check"],
    },
    {
        "name": "ema_mean_age_without_the_cap",
        # uses the warm-up result J / 10 for every J, as if the cap never bound
        "answers": {"ex7_4_answer": '''\
def ema_mean_age(J, decay):
    return J / 10
'''},
        "fails": ["ex7_4_check"],
    },
    {
        "name": "x0_pair_asks_the_network",
        # skips the algebra and asks the trained U-Net for x0-hat at time t instead
        "answers": {"ex7_5_answer": '''\
def x0_from_ddim_pair(x_t, x_s, t, s, schedule):
    t_vec = torch.full((x_t.shape[0],), t, device=x_t.device)
    a_t, s_t = (c.reshape(-1, 1, 1, 1) for c in schedule.alpha_sigma(t_vec))
    with torch.no_grad():
        return (x_t - s_t * model(x_t, t_vec)) / a_t
'''},
        "fails": ["ex7_5_check"],
    },
    {
        "name": "calls_resblock_parameter_count",
        "calls_dmlib": True,
        # Exercise 7.3 asks for the closed form; dmlib's ResBlock and its count are off
        "answers": {"ex7_3_answer": '''\
def resblock_parameters(c_in, c_out, emb_dim, groups, dropout):
    return nn.unet.parameter_count(
        nn.unet.ResBlock(c_in, c_out, emb_dim, groups=groups, dropout=dropout))
'''},
        "fails": ["ex7_3_check"],
    },
]
