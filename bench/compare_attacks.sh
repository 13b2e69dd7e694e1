#!/bin/bash
# Side-by-side: `aegis attack` against IBM's Adversarial Robustness Toolbox (ART) on the same
# TorchScript model and the same first N Fashion-MNIST test images (issue 5).
#
#   bench/compare_attacks.sh            runs every phase, keeps raw JSON in $OUT, prints Markdown tables
#   PHASES="fgsm pgd" bench/compare_attacks.sh
#   SUMMARY_ONLY=1 bench/compare_attacks.sh      re-prints the tables from the JSON already in $OUT
#
# Phases (each aegis run is followed at once by its ART twin, so a pair sees the same machine load;
# pairs are repeated and the fastest run of each side is reported):
#   fgsm    FGSM Linf, eps $EPS                                        (pairs: $REPEAT)
#   pgd     PGD Linf, no random start, $PGD_STEPS steps of $PGD_STEP, eps $EPS; ART's run also times the
#           plain PyTorch PGD loop and the plain forward+backward floor (bench/art/art_attack.py)  ($REPEAT)
#   apgd    APGD-CE and APGD-DLR Linf, eps $APGD_EPS, $APGD_STEPS steps, 1 restart    ($REPEAT_SLOW)
#   square  Square Linf, eps $SQUARE_EPS, $SQUARE_QUERIES queries per image           ($REPEAT_SLOW)
#   hsj     HopSkipJump L2 on the first $HSJ_N images, $HSJ_STEPS iterations, init_eval 100,
#           max_eval 10000, init_size 100 on both sides (aegis's defaults for the last three; aegis also
#           stops a sample at $HSJ_MAX_QUERIES queries); scored at L2 thresholds $HSJ_EPS     ($REPEAT_SLOW)
#
# On a shared machine set QUIET_WAIT=S: before each pair wait up to S seconds until the CPUs are at least
# QUIET_IDLE % (90) idle; LibTorch and PyTorch with 2 threads slow down 5-10x when another job holds a core.
#
# Environment: AEGIS (build/aegis), MODEL, DATA, N (1000), OUT (/tmp/aegis-bench), THREADS (2, both
# sides), BATCH (128, both sides), ART_DIR (/tmp/art, a source tree: see bench/art/README.md),
# PYTHON (/usr/bin/python3), and the knobs named above.
set -u -o pipefail

HERE=$(dirname "$(realpath "$0")")
ROOT=$(dirname "$HERE")
AEGIS=${AEGIS:-$ROOT/build/aegis}
MODEL=${MODEL:-$ROOT/examples/fashion-mnist/model.pt}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
N=${N:-1000}
OUT=${OUT:-/tmp/aegis-bench}
THREADS=${THREADS:-2}
BATCH=${BATCH:-128}
ART_DIR=${ART_DIR:-/tmp/art}
PYTHON=${PYTHON:-/usr/bin/python3}
PHASES=${PHASES:-"fgsm pgd apgd square hsj"}
REPEAT=${REPEAT:-3}
REPEAT_SLOW=${REPEAT_SLOW:-1}
EPS=${EPS:-0.05,0.1,0.2}
PGD_STEPS=${PGD_STEPS:-40}
PGD_STEP=${PGD_STEP:-0.01}
APGD_EPS=${APGD_EPS:-0.1}
APGD_STEPS=${APGD_STEPS:-100}
SQUARE_EPS=${SQUARE_EPS:-0.1}
SQUARE_QUERIES=${SQUARE_QUERIES:-1000}
HSJ_N=${HSJ_N:-100}
HSJ_STEPS=${HSJ_STEPS:-20}
HSJ_MAX_QUERIES=${HSJ_MAX_QUERIES:-10000}
HSJ_EPS=${HSJ_EPS:-1,2,3}
SUMMARY_ONLY=${SUMMARY_ONLY:-0}
# aegis pins OpenBLAS (Debian's torch does its Linear layers there) to one thread and lets LibTorch's
# OpenMP pool use $THREADS; a stock Python process lets OpenBLAS start its own threads as well, which
# oversubscribes 2 cores (the plain PyTorch forward+backward measured 0.19-0.24 ms per image against
# 0.145-0.155 ms with OPENBLAS_NUM_THREADS=1). Default: the same setup as aegis. ART_OPENBLAS_THREADS=
# (empty) runs ART in the stock environment instead.
ART_OPENBLAS_THREADS=${ART_OPENBLAS_THREADS-1}
# TUNE_MALLOC=1 keeps glibc from handing LibTorch's large activation buffers back to the kernel after
# every call (both sides): each model call otherwise page-faults its buffers in afresh, which cost
# 30-45% of the wall time of PGD and HopSkipJump here. Off by default (stock behaviour of both tools).
TUNE_MALLOC=${TUNE_MALLOC:-0}
if [ "$TUNE_MALLOC" = 1 ]; then
    export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=1073741824
fi

mkdir -p "$OUT"
OUT=$(realpath "$OUT")
ART_PY="$HERE/art/art_attack.py"

if [ "$SUMMARY_ONLY" != 1 ]; then
    [ -x "$AEGIS" ] || { echo "missing $AEGIS (build aegis first, or set AEGIS=...)" >&2; exit 2; }
    [ -f "$ART_DIR/art/__init__.py" ] || { echo "missing ART source tree in $ART_DIR (see bench/art/README.md)" >&2; exit 2; }
    [ -f "$MODEL" ] || { echo "missing model $MODEL" >&2; exit 2; }

    # The machine and the versions, once per run.
    art_commit=unknown
    for g in /work/.mirror/Trusted-AI+adversarial-robustness-toolbox/repo "$ART_DIR/.git"; do
        [ -d "$g" ] && art_commit=$(git --git-dir="$g" log -1 --format='%H %cs' 2>/dev/null) && break
    done
    # Also the model's forward FLOPs (torch profiler) and what a plain float32 GEMM reaches on these
    # threads: the ceiling a forward+backward pass could approach.
    (cd /tmp && PYTHONPATH="$ART_DIR" "$PYTHON" - "$OUT/meta.json" "$art_commit" "$THREADS" "$MODEL" \
        "${ART_OPENBLAS_THREADS:-unset}" "${GLIBC_TUNABLES:-}" <<'EOF'
import json, os, platform, sys, time
import torch, art
torch.set_num_threads(int(sys.argv[3]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
net = torch.jit.load(sys.argv[4], map_location="cpu").eval()
with torch.no_grad(), torch.profiler.profile(with_flops=True) as prof:
    net(torch.rand(1, 1, 28, 28))
flops = sum(e.flops for e in prof.key_averages() if e.flops)
a, b = torch.rand(1024, 1024), torch.rand(1024, 1024)
for _ in range(3):
    a @ b
best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(20))
json.dump({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host_cpus": os.cpu_count(), "cpu": cpu,
           "kernel": platform.release(), "python": platform.python_version(), "torch": torch.__version__,
           "art_version": art.__version__, "art_commit": sys.argv[2], "threads": int(sys.argv[3]),
           "art_openblas_threads": sys.argv[5], "glibc_tunables": sys.argv[6], "model_forward_flops": flops, "sgemm_1024_gflops": round(2 * 1024 ** 3 / best / 1e9, 1)},
          open(sys.argv[1], "w"), indent=2)
EOF
    ) || exit 2
    "$AEGIS" --version > "$OUT/aegis_version.txt" 2>&1 || true
    : > "$OUT/load.tsv"
    echo "compare_attacks: model $MODEL, first $N images, $THREADS threads, batch $BATCH, raw JSON in $OUT" >&2
fi

load() { cut -d' ' -f1-3 /proc/loadavg; }

idle_pct() {  # % of CPU time idle over the next 2 s, all cores (from /proc/stat)
    local a b
    a=$(awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
    sleep 2
    b=$(awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat)
    echo "$a $b" | awk '{d = $4 - $2; print (d > 0) ? int(100 * ($3 - $1) / d) : 100}'
}

wait_quiet() {  # up to QUIET_WAIT s for the CPUs to be >= QUIET_IDLE % idle (other jobs share the box)
    [ "${QUIET_WAIT:-0}" -gt 0 ] || return 0
    local waited=0 idle
    while idle=$(idle_pct); [ "$idle" -lt "${QUIET_IDLE:-90}" ] && [ $waited -lt "$QUIET_WAIT" ]; do
        [ $waited = 0 ] && echo "  waiting for a quiet machine (idle $idle%) ..." >&2
        sleep 8; waited=$((waited + 10))
    done
    echo "  idle $idle% after waiting ${waited} s" >&2
}

aegis_attack() {  # out.json, then aegis attack arguments
    local out=$1; shift
    "$AEGIS" attack --model "$MODEL" --data "$DATA" --split test --threads "$THREADS" --batch "$BATCH" \
        --format json --quiet --output "$out" "$@"
    local rc=$?
    # exit 1 only means "findings" (the model is not robust); 2 and up is an error
    if [ $rc -gt 1 ] || [ ! -s "$out" ]; then echo "aegis attack failed (rc $rc): $*" >&2; return 1; fi
}

art_attack() {  # out.json, then art_attack.py arguments
    local out=$1; shift
    local env=(env)
    [ -n "$ART_OPENBLAS_THREADS" ] && env+=(OPENBLAS_NUM_THREADS="$ART_OPENBLAS_THREADS")
    (cd /tmp && "${env[@]}" PYTHONPATH="$ART_DIR" "$PYTHON" "$ART_PY" --model "$MODEL" --data "$DATA" --split test \
        --threads "$THREADS" --batch-size "$BATCH" --json-out "$out" "$@" > /dev/null) \
        || { echo "art_attack.py failed: $*" >&2; return 1; }
}

pair() {  # phase, repeat index, then "--" separated: aegis args -- art args
    local phase=$1 r=$2; shift 2
    local aegis_args=() art_args=() side=aegis
    for a in "$@"; do
        if [ "$a" = "--" ]; then side=art; continue; fi
        if [ $side = aegis ]; then aegis_args+=("$a"); else art_args+=("$a"); fi
    done
    wait_quiet
    local before; before=$(load)
    local t0=$SECONDS
    echo "[$phase $r] aegis ... (load $before)" >&2
    aegis_attack "$OUT/aegis_${phase}_$r.json" "${aegis_args[@]}"
    local mid; mid=$(load)
    echo "[$phase $r] ART ... (load $mid)" >&2
    art_attack "$OUT/art_${phase}_$r.json" "${art_args[@]}"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$phase" "$r" "$before" "$mid" "$(load)" "$((SECONDS - t0))" >> "$OUT/load.tsv"
}

if [ "$SUMMARY_ONLY" != 1 ]; then
    for phase in $PHASES; do
        case $phase in
            fgsm)
                for r in $(seq 1 "$REPEAT"); do
                    pair fgsm "$r" --limit "$N" --attack fgsm --eps "$EPS" --reference \
                        -- --limit "$N" --attacks fgsm --fgsm-eps "$EPS" --no-reference
                done;;
            pgd)
                for r in $(seq 1 "$REPEAT"); do
                    pair pgd "$r" --limit "$N" --attack pgd --eps "$EPS" --steps "$PGD_STEPS" --step-size "$PGD_STEP" \
                        --reference \
                        -- --limit "$N" --attacks pgd --pgd-eps "$EPS" --pgd-steps "$PGD_STEPS" --pgd-step-size "$PGD_STEP"
                done;;
            apgd)
                for r in $(seq 1 "$REPEAT_SLOW"); do
                    pair apgd "$r" --limit "$N" --attack apgd-ce,apgd-dlr --eps "$APGD_EPS" --steps "$APGD_STEPS" \
                        --restarts 1 --reference \
                        -- --limit "$N" --attacks apgd --apgd-eps "$APGD_EPS" --apgd-steps "$APGD_STEPS" \
                        --apgd-restarts 1 --no-reference
                done;;
            square)
                for r in $(seq 1 "$REPEAT_SLOW"); do
                    pair square "$r" --limit "$N" --attack square --eps "$SQUARE_EPS" --max-queries "$SQUARE_QUERIES" \
                        -- --limit "$N" --attacks square --square-eps "$SQUARE_EPS" --square-queries "$SQUARE_QUERIES" \
                        --no-reference
                done;;
            hsj)
                # the extra threshold 1000 scores every adversarial found: its row gives the median L2
                for r in $(seq 1 "$REPEAT_SLOW"); do
                    pair hsj "$r" --limit "$HSJ_N" --attack hopskipjump --norm l2 --eps "$HSJ_EPS,1000" \
                        --steps "$HSJ_STEPS" --max-queries "$HSJ_MAX_QUERIES" \
                        -- --limit "$HSJ_N" --attacks hsj --hsj-norm 2 --hsj-eps "$HSJ_EPS" --hsj-limit "$HSJ_N" \
                        --hsj-max-iter "$HSJ_STEPS" --hsj-max-eval 10000 --hsj-init-eval 100 --hsj-init-size 100 \
                        --no-reference
                done;;
            *) echo "unknown phase $phase" >&2; exit 2;;
        esac
    done
fi

# ---- the summary: Markdown tables from the raw JSON ----------------------------------------------
"$PYTHON" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import glob, json, os, statistics, sys

out = sys.argv[1]

def runs(side, phase):
    files = sorted(glob.glob(os.path.join(out, f"{side}_{phase}_*.json")))
    return [json.load(open(f)) for f in files]

def rows(side, phase):
    """(attack, eps) -> list of result rows over the repeats; aegis fractions become percent."""
    got = {}
    for rep in runs(side, phase):
        for r in rep["results"]:
            r = dict(r)
            if side == "aegis":
                r["robust_accuracy"] *= 100.0
                r["success_rate"] *= 100.0
            name = r["attack"].replace("hopskipjump", "hsj")
            got.setdefault((name, round(float(r["eps"]), 6)), []).append(r)
    return got

def best(rs, key="seconds"):
    return min(rs, key=lambda r: r[key]) if rs else None

def f(v, nd=2):
    return "-" if v is None else f"{v:.{nd}f}"

meta = json.load(open(os.path.join(out, "meta.json"))) if os.path.exists(os.path.join(out, "meta.json")) else {}
print(f"## aegis attack vs ART ({meta.get('date', '?')})\n")
print(f"- machine: {meta.get('host_cpus', '?')} CPUs ({meta.get('cpu', '?')}), kernel {meta.get('kernel', '?')}; "
      f"torch {meta.get('torch', '?')} (Python side); ART {meta.get('art_version', '?')} at {meta.get('art_commit', '?')}; "
      f"threads {meta.get('threads', '?')} on both sides; OPENBLAS_NUM_THREADS for ART: "
      f"{meta.get('art_openblas_threads', 'unset')} (aegis: 1); GLIBC_TUNABLES (both): "
      f"{meta.get('glibc_tunables') or 'unset'}")
if os.path.exists(os.path.join(out, "load.tsv")):
    loads = [l.rstrip("\n").split("\t") for l in open(os.path.join(out, "load.tsv")) if l.strip()]
    print("- load average (1/5/15 min) before each aegis run / before its ART twin / after; wall s of the pair:")
    for ph, r, a, b, c, s in loads:
        print(f"  - {ph} #{r}: {a} / {b} / {c}; {s} s")
print()

# The per-pass floor: ART's run measures plain PyTorch (steps x forward+backward over n images);
# aegis's --reference measures plain LibTorch (3 passes over n) and scales it to the gradient passes.
art_pgd_runs = runs("art", "pgd")
torch_pass = None
torch_pass_pg = None
if art_pgd_runs:
    refs = [r["reference"] for r in art_pgd_runs if "reference" in r]
    if refs:
        n_ref = art_pgd_runs[0]["n"]
        torch_pass = min(r["fwd_bwd_seconds"] for r in refs) / (refs[0]["steps"] * n_ref)
        torch_pass_pg = min(r["fwd_bwd_seconds_param_grads"] for r in refs) / (refs[0]["steps"] * n_ref)

def aegis_pass(rs):
    vals = [r["reference_seconds"] / r["gradient_queries"] for r in rs if r.get("reference_seconds") and r.get("gradient_queries")]
    return min(vals) if vals else None

def art_overhead(r):
    g = r["queries"]["gradient_samples"]
    return r["seconds"] / (torch_pass * g) if (torch_pass and g) else None

white = []
for phase in ("fgsm", "pgd", "apgd"):
    a, b = rows("aegis", phase), rows("art", phase)
    for key in sorted(set(a) | set(b)):
        white.append((phase, key, a.get(key, []), b.get(key, [])))

clean_a = next((rep["clean_accuracy"] * 100 for ph in ("pgd", "fgsm", "apgd", "square") for rep in runs("aegis", ph)), None)
clean_b = next((rep["clean_accuracy"] for ph in ("pgd", "fgsm", "apgd", "square") for rep in runs("art", ph)), None)
print(f"Clean accuracy on the first N images: aegis {f(clean_a, 1)}%, ART {f(clean_b, 1)}%.\n")

if white:
    print("### White-box (Linf); seconds = fastest of the repeats; overhead = attack seconds / the plain "
          "forward+backward time of the same gradient passes\n")
    print("| attack | eps | aegis robust % | ART robust % | diff (pts) | aegis s | ART s | ART s / aegis s "
          "| aegis grad passes | ART grad passes | aegis overhead | ART overhead |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for phase, (name, eps), ra, rb in white:
        A, B = best(ra), best(rb)
        acc_a = A["robust_accuracy"] if A else None
        acc_b = B["robust_accuracy"] if B else None
        diff = acc_a - acc_b if A and B else None
        ovh_a = A["seconds"] / (aegis_pass(ra) * A["gradient_queries"]) if A and aegis_pass(ra) else None
        ovh_b = art_overhead(B) if B else None
        print(f"| {name} | {eps:g} | {f(acc_a, 1)} | {f(acc_b, 1)} | {f(diff, 1) if diff is not None else '-'} "
              f"| {f(A['seconds'] if A else None)} | {f(B['seconds'] if B else None)} "
              f"| {f(B['seconds'] / A['seconds']) if A and B else '-'}x "
              f"| {A['gradient_queries'] if A else '-'} | {B['queries']['gradient_samples'] if B else '-'} "
              f"| {f(ovh_a)}x | {f(ovh_b)}x |")
    print()
    flo = []
    ap = [aegis_pass(ra) for _, _, ra, _ in white if aegis_pass(ra)]
    if ap:
        flo.append(f"LibTorch (aegis --reference) {min(ap) * 1e3:.4f} ms")
    if torch_pass:
        flo.append(f"PyTorch {torch_pass * 1e3:.4f} ms ({torch_pass_pg * 1e3:.4f} ms with parameter gradients, as ART's loss_gradient computes them)")
    if flo:
        print("Plain forward+backward per image (batch " + str(art_pgd_runs[0]["batch_size"] if art_pgd_runs else "?") +
              "): " + "; ".join(flo) + ".\n")
    fl = meta.get("model_forward_flops")
    if fl and ap:
        rate = 2 * fl / min(ap) / 1e9
        print(f"The model's forward is {fl / 1e6:.2f} MFLOP per image; forward + backward to the input about twice that "
              f"({2 * fl / 1e6:.2f} MFLOP). The LibTorch pass above runs at {rate:.1f} GFLOP/s, "
              f"{100 * rate / meta['sgemm_1024_gflops']:.0f}% of a 1024x1024 float32 GEMM on the same threads "
              f"({meta['sgemm_1024_gflops']} GFLOP/s, measured at the start).\n")

if art_pgd_runs and "reference" in art_pgd_runs[0]:
    a = rows("aegis", "pgd")
    print("### PGD agreement (no random start, same step, same order: step, clip, project)\n")
    print("| eps | aegis robust % | ART robust % | plain PyTorch PGD robust % | aegis - ART (pts) | plain = ART bit for bit | plain s | ART s | aegis s |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    plain = {}
    for rep in art_pgd_runs:
        for p in rep["reference"]["plain_pgd"]:
            plain.setdefault(round(p["eps"], 6), []).append(p)
    for eps in sorted(plain):
        P = min(plain[eps], key=lambda p: p["seconds"])
        A = best(a.get(("pgd", eps), []))
        acc_a = A["robust_accuracy"] if A else None
        print(f"| {eps:g} | {f(acc_a, 1)} | {f(P['art_robust_accuracy'], 1)} | {f(P['robust_accuracy'], 1)} "
              f"| {f(acc_a - P['art_robust_accuracy'], 1) if A else '-'} | {P['adversarials_identical']} "
              f"({P['images_differing']} images differ) | {f(P['seconds'])} | {f(min(q['art_seconds'] for q in plain[eps]))} "
              f"| {f(A['seconds'] if A else None)} |")
    print()

def bb_table(phase, title):
    a, b = rows("aegis", phase), rows("art", phase)
    if not a and not b:
        return
    med = {}
    A = best(a.get(("hsj", 1000.0), []))
    if A:
        med["aegis"] = A["perturbation"]["median_l2"]
    for (name, eps), rs in b.items():
        if rs and rs[0].get("median_distance_found") is not None:
            med["ART"] = rs[0]["median_distance_found"]
    print(f"### {title}\n")
    print("| attack | eps | side | images (clean-correct) | success % | robust % | queries / image "
          "| queries / success | aegis: mean queries of a successful image | seconds | ART s / aegis s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(set(a) | set(b)):
        name, eps = key
        if eps >= 1000:
            continue
        A, B = best(a.get(key, [])), best(b.get(key, []))
        for side, R in (("aegis", A), ("ART", B)):
            if not R:
                continue
            if side == "aegis":
                n, ok, q, succ, own = R["samples"], R["attacked"], R["queries"], R["successes"], R["queries_per_success"]
            else:
                n, ok, q, succ, own = R["n"], R.get("clean_correct"), R["queries"]["forward_samples"], R.get("successes"), None
            speed = f"{B['seconds'] / A['seconds']:.2f}x" if (A and B and side == "aegis") else ""
            print(f"| {name} | {eps:g} | {side} | {n} ({ok}) | {f(R['success_rate'], 1)} | {f(R['robust_accuracy'], 1)} "
                  f"| {q / n:.0f} | {f(q / succ, 0) if succ else '-'} | {f(own, 0) if own else ''} "
                  f"| {f(R['seconds'])} | {speed} |")
    if med:
        print("\nMedian L2 of every adversarial found (no threshold): " +
              ", ".join(f"{k} {v:.3f}" for k, v in med.items()) + ".")
    print("\nqueries / image and / success count every sample the model was asked about during the attack "
          "(aegis: only the clean-correct images are attacked; ART: all images, plus its own bookkeeping predictions).")
    print()

bb_table("square", "Square (Linf, score-based), same per-image query budget")
bb_table("hsj", "HopSkipJump (L2, decision-based), same iteration schedule; success = misclassified and L2 <= eps")
EOF
