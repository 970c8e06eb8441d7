#!/usr/bin/env bash
# One e5-small XPE call (8 steps, batch 8) at 1 and 2 CPU threads, in bf16 and fp32, and the largest difference of each tensor of state.pt between the two thread counts (run 2026-12-04 from /work/main on a 2-core AMD EPYC; its output: compare.txt).
cd /work/main   # the repository root; .e5 made by python ../shared/tools/e5small.py .e5
for t in 1 2; do
 for p in bf16 fp32; do
  OMP_NUM_THREADS=$t TQDM_DISABLE=1 python train.py --model .e5 --data-dir /work/shared/sib200 --source eng_Latn --method xpe --seed 1 --steps 8 --eval-every 4 --batch-size 8 --precision $p --device cpu --out /tmp/thr/$p-t$t > /tmp/thr/$p-t$t.log 2>&1
 done
done
python - <<'P'
import torch
for p in ("bf16","fp32"):
    a=torch.load(f"/tmp/thr/{p}-t1/state.pt",weights_only=False); b=torch.load(f"/tmp/thr/{p}-t2/state.pt",weights_only=False)
    def walk(x,y,k=""):
        if isinstance(x,torch.Tensor):
            d=(x.float()-y.float()).abs().max().item() if x.numel() else 0
            if d: print(p,k,d)
        elif isinstance(x,dict):
            for kk in x: walk(x[kk],y[kk],k+"/"+str(kk))
        elif isinstance(x,(list,tuple)):
            for i,(xx,yy) in enumerate(zip(x,y)): walk(xx,yy,k+f"[{i}]")
    walk(a,b); print(p,"compared")
P
