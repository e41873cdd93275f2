import sys, time, torch, transformers as tf
cu = torch.cuda
from zofo.evaluation.scoring import CandidateBatch as B, candidate_scores, example_pieces
E, C, L = 32, 10, 2000
S = {"smol": ("Llama", 576, 30, 9, 3, 1536, 49152), "qwen": ("Qwen2", 1536, 28, 12, 2, 8960, 151936)}
for arg in sys.argv[1:]:
    shape, dtype = arg.split(":")
    k, h, n, a, kv, f, v = S[shape]
    cfg = getattr(tf, k + "Config")(hidden_size=h, num_hidden_layers=n, num_attention_heads=a,
                                    num_key_value_heads=kv, intermediate_size=f, vocab_size=v)
    model = getattr(tf, k + "ForCausalLM")(cfg).to("cuda", getattr(torch, dtype)).eval()
    one = torch.ones(E * C, L, dtype=torch.long)
    tm = one.clone()
    tm[:, :-3] = 0
    one[1::2, -5:] = 0  # padding
    batch = B(torch.randint(3, v, (E * C, L)), one, tm, torch.arange(E).repeat_interleave(C),
              torch.arange(C).repeat(E), torch.zeros(E, dtype=torch.long), torch.full((E,), C))
    print(f"\n{cu.get_device_name()} {arg} {E * C}x{L}\n|max_tokens|forwards|"
          "peak GiB|s|tokens/s|\n|-|-|-|-|-|")
    for t in (2**13, 2**14, 2**15, 2**16, 2**17, 2**18, None):
        pieces = example_pieces(batch, t and t // L)  # = token bound t
        cu.empty_cache()
        cu.reset_peak_memory_stats()
        w, ts = cu.memory_allocated(), []
        try:
            with torch.no_grad():
                for _ in range(3):
                    t0 = time.perf_counter()
                    for p in pieces:
                        candidate_scores(model, p.to("cuda")).cpu()
                    ts.append(time.perf_counter() - t0)
        except torch.OutOfMemoryError:
            print(f"|{t}|{len(pieces)}|out of memory|||")
            continue
        s = sorted(ts)[1]
        print(f"|{t}|{len(pieces)}|{(cu.max_memory_allocated() - w) / 2**30:.2f}|{s:.3f}|{E * C * L / s:,.0f}|")
