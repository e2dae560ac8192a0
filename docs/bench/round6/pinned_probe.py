import time, torch
x = torch.randn(16000, 1024, device="cuda")
torch.cuda.synchronize()
for label in ("fresh pinned", "again (cache)"):
    t0 = time.perf_counter(); hs = []
    for _ in range(8):
        h = torch.empty(x.shape, dtype=x.dtype, pin_memory=True); hs.append(h)
    t1 = time.perf_counter()
    for h in hs: h.copy_(x, non_blocking=True)
    torch.cuda.synchronize(); t2 = time.perf_counter()
    print(f"{label}: 8 x {x.numel()*4/1e6:.0f} MB: alloc {(t1-t0)*1e3/8:.2f} ms each, D2H {(t2-t1)*1e3/8:.2f} ms each ({8*x.numel()*4/(t2-t1)/1e9:.1f} GB/s)")
    del hs
t0 = time.perf_counter()
for _ in range(8):
    h = torch.empty(x.shape, dtype=x.dtype); h.copy_(x)
print(f"pageable copy: {(time.perf_counter()-t0)*1e3/8:.2f} ms each")
xh = x.half(); t0 = time.perf_counter()
for _ in range(8):
    h = torch.empty(xh.shape, dtype=xh.dtype, pin_memory=True); h.copy_(xh, non_blocking=True)
torch.cuda.synchronize(); print(f"fp16 fresh pinned alloc+D2H: {(time.perf_counter()-t0)*1e3/8:.2f} ms each")
