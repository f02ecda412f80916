"""Chapter 12: planted-wrong submissions."""

PLANTS = [
    {
        "name": "patches_in_column_order",
        # walks the patches column by column: the right numbers in the wrong tokens (the
        # transposed unpatchify that tests/test_dit.py guards against, on the way in)
        "answers": {"ex12_1a_answer": '''\
def patchify(x, p):
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 4, 2, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens, p, c, h, w):
    b = tokens.shape[0]
    x = tokens.reshape(b, w // p, h // p, c, p, p).permute(0, 3, 2, 4, 1, 5)
    return x.reshape(b, c, h, w)
'''},
        "fails": ["ex12_1a_check"],
    },
    {
        "name": "modulation_without_the_one",
        # multiplies by scale instead of (1 + scale): a zero scale would erase the tokens
        "answers": {"ex12_1b_answer": '''\
def ada_ln(h, shift, scale, eps=1e-6):
    mean = h.mean(-1, keepdim=True)
    var = h.var(-1, unbiased=False, keepdim=True)
    return (h - mean) / torch.sqrt(var + eps) * scale[:, None, :] + shift[:, None, :]
'''},
        "fails": ["ex12_1b_check"],
    },
    {
        "name": "dependence_of_the_whole_output",
        # compares the whole output instead of the output at (row, col): every input
        # position seems to matter, even with the gates shut
        "answers": {"ex12_1c_answer": '''\
def depends_on(model, z, t, y, row, col):
    with torch.no_grad():
        base = model(z, t, y)
        out = torch.zeros(7, 7, dtype=torch.bool)
        for i in range(7):
            for j in range(7):
                moved = z.clone()
                moved[0, :, i, j] += 1.0
                out[i, j] = not torch.equal(model(moved, t, y), base)
    return out
'''},
        "fails": ["ex12_1c_check"],
    },
    {
        "name": "calls_dit_sincos_positions",
        "calls_dmlib": True,
        # Exercise 12.3 asks for what nn.dit.sincos_positions does; it is switched off
        "answers": {"ex12_3_answer": '''\
def sincos_2d(grid, dim):
    return nn.dit.sincos_positions(grid, dim).double()
'''},
        "fails": ["ex12_3_check"],
    },
    {
        "name": "heads_multiply_the_attention",
        # counts the attention products once per head, as if each head used all D features
        "answers": {"ex12_4_answer": '''\
def attention_share(n_tok, d, mlp_ratio):
    attention = 2 * n_tok * n_tok * d * 4
    linear = n_tok * (3 * d * d + d * d + 2 * mlp_ratio * d * d)
    return attention / (attention + linear)
'''},
        "fails": ["ex12_4_check"],
    },
]
