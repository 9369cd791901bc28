#!/usr/bin/env bash
# Correctness of the AArch64 (Apple Silicon) code path, on an x86 Linux machine, under qemu-user emulation.
#
# Builds (once, cached) an arm64 Debian root with mmdebstrap, copies this checkout in (its tracked and
# unignored files, as a fresh clone would have them), installs it with pip into a venv there (numpy, numba and
# llvmlite ship aarch64 wheels), then runs inside it, as an arm64 process:
#   asm        what numba compiles for (sdot/tbl/fp16 chosen or not), and per type which vector instructions
#              its compiled row kernel contains (bench_kernels.py --asm)
#   kernels    bit-exact dequantize, matvec/matmul bounds and the integer GEMM for every type, and the SIMD
#              tests: the NEON paths (sdot, tbl, fcvt) against the generic IR, bit for bit
#   tokenizer  the tokenizer rules, and token-for-token parity with llama.cpp's fixtures on real vocabularies
#   parity     SmolLM2 greedy continuations against the committed llama.cpp fixtures
# and prints each part's result and wall time. Not part of `make test` or CI: emulation is slow (see README).
#
#   sudo scripts/check_aarch64.sh             # or: make check-aarch64
#   sudo scripts/check_aarch64.sh kernels     # only some parts: asm kernels tokenizer parity
#   ARM64_REBUILD=1 ...                       # a fresh root, venv and kernel cache
#
# Needs root (mmdebstrap, chroot, mounts) and Debian/Ubuntu host tools, installed here if missing:
# qemu-user-static, binfmt-support, mmdebstrap, arch-test. Settings (environment):
#   ARM64_ROOT   the cached root (default ~/.cache/gguf-runtime/arm64-root)
#   ARM64_CPU    the CPU numba compiles for (default apple-m1: an M1's instructions, sdot included; qemu's
#                default "max" CPU runs them). LLVM cannot detect the emulated CPU: under qemu-user
#                /proc/cpuinfo is the host's.
#   GGUF_RUNTIME_MODELS  the fetched models (default ./models), mounted read-only
#   NICE         niceness of the emulated runs (default 15: a shared machine stays usable)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${ARM64_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/gguf-runtime/arm64-root}
MODELS=$(realpath -m "${GGUF_RUNTIME_MODELS:-$REPO/models}")
CPU=${ARM64_CPU:-apple-m1}
NICE=${NICE:-15}
SUITE=bookworm
PARTS=("$@")
[[ ${#PARTS[@]} -gt 0 ]] || PARTS=(asm kernels tokenizer parity)

say() { printf '[check-aarch64] %s\n' "$*"; }
die() { printf 'check-aarch64: %s\n' "$*" >&2; exit 2; }

for part in "${PARTS[@]}"; do
    case $part in kernels|asm|tokenizer|parity) ;; *) die "unknown part '$part' (asm kernels tokenizer parity)";; esac
done
[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap, chroot and bind mounts): run it with sudo"
[[ -d $MODELS ]] || die "no models in $MODELS: run \`make models-all\` (or set GGUF_RUNTIME_MODELS)"
command -v git >/dev/null || die "needs git (to copy the checkout's files)"

START=$SECONDS

# ---------------------------------------------------------------------------------------------- host tools

host_tools() {
    local missing=()
    command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
    command -v update-binfmts >/dev/null || missing+=(binfmt-support)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    command -v arch-test >/dev/null || missing+=(arch-test)
    if [[ ${#missing[@]} -gt 0 ]]; then
        say "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    if ! arch-test arm64 >/dev/null 2>&1; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
        arch-test arm64 >/dev/null 2>&1 || die "arm64 binaries do not run here (binfmt_misc + qemu-aarch64-static)"
    fi
}

# The host's Debian sources for $SUITE (its mirror, updates, security), so the root uses the mirror apt here
# uses; other repositories (third-party, other suites, other architectures) are left out. None found:
# mmdebstrap's default mirror.
debian_sources() {
    local f suite="(^Suites:.*[[:space:]]|^deb([[:space:]]+\[[^]]*\])?[[:space:]]+[^[:space:]]+[[:space:]]+)"
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] && grep -Eq "$suite$SUITE(-[a-z]+)?([[:space:]]|\$)" "$f" || continue
        if grep -Eq '^Architectures:|arch=' "$f" && ! grep -Eq '^Architectures:.*arm64|arch=[^] ]*arm64' "$f"; then
            continue
        fi
        echo "$f"
    done
}

build_root() {
    if [[ -n ${ARM64_REBUILD:-} ]]; then rm -rf "$ROOT"; fi
    if [[ -f $ROOT/.complete ]]; then return; fi
    say "building the arm64 Debian $SUITE root in $ROOT (once; ~10-20 min under emulation)"
    rm -rf "$ROOT.tmp"
    mkdir -p "$(dirname "$ROOT")"
    local sources
    mapfile -t sources < <(debian_sources)
    nice -n "$NICE" mmdebstrap --quiet --architectures=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates,libgomp1 \
        "$SUITE" "$ROOT.tmp" "${sources[@]}"
    rm -rf "$ROOT"
    mv "$ROOT.tmp" "$ROOT"
    touch "$ROOT/.complete"
}

# ------------------------------------------------------------------------------------------- inside the root

copy_checkout() {
    # a fresh copy each run: the checkout's tracked and unignored files, timestamps kept (numba's cache keys)
    rm -rf "$ROOT/src"
    mkdir -p "$ROOT/src" "$ROOT/models"
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - --ignore-failed-read -cf -) | tar -xf - -C "$ROOT/src"
    # pip reaches PyPI from inside, through the host's DNS and CA bundle (which may hold a proxy's CA)
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    cp -L "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$ROOT/etc/ssl/host-ca.crt"
}

# Runs a command in the root, as an arm64 process, in a private mount namespace: the bind mounts vanish with
# it, even when the run is interrupted.
in_root() {
    unshare --mount --propagation private -- bash -euo pipefail -c '
        root=$1 models=$2 cpu=$3 niceness=$4
        shift 4
        mount --rbind /proc "$root/proc"
        mount --rbind /dev "$root/dev"
        mount --rbind /sys "$root/sys"
        mount --bind "$models" "$root/models"
        mount -o remount,bind,ro "$root/models"
        exec chroot "$root" /usr/bin/env -i HOME=/root PATH=/opt/venv/bin:/usr/bin:/bin LANG=C.UTF-8 \
            PIP_CERT=/etc/ssl/host-ca.crt ${HTTPS_PROXY:+HTTPS_PROXY=$HTTPS_PROXY} ${https_proxy:+https_proxy=$https_proxy} \
            PYTHONPATH=/src GGUF_RUNTIME_MODELS=/models NUMBA_CPU_NAME="$cpu" QEMU_CPU=max \
            PYTHONDONTWRITEBYTECODE=1 nice -n "$niceness" "$@"' in_root "$ROOT" "$MODELS" "$CPU" "$NICE" "$@"
}

install_project() {
    local want have
    want=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
    have=$(cat "$ROOT/opt/venv/.installed" 2>/dev/null || true)
    if [[ $want == "$have" ]]; then return; fi
    say "installing the project with pip into the root's venv (aarch64 wheels; a few minutes)"
    rm -rf "$ROOT/opt/venv"
    in_root sh -c 'python3 -m venv /opt/venv && cd /src && pip install -q --disable-pip-version-check -e ".[dev]"'
    echo "$want" > "$ROOT/opt/venv/.installed"
}

# ------------------------------------------------------------------------------------------------ the parts

# Bit-exact dequantize, matvec/matmul bounds and the integer GEMM: every type; plus every SIMD test.
KERNEL_TESTS=(tests/test_quants.py tests/test_quants_simd.py -k
    "bit_exact or within_activation_bound or matmul_matches_matvec or gemm_bit_identical or half or generic_ir or fast_path")
TOKENIZER_TESTS=(tests/test_tokenizer_rules.py tests/test_tokenizer.py)
# Gemma's vocabulary (SPM) only where it is fetched; said in the summary when it is not.
tokenizer_tests() {
    if ! compgen -G "$MODELS/gemma-3-270m*.gguf.sha256" >/dev/null; then
        TOKENIZER_TESTS+=(-k "not gemma")
        NOTES+=("tokenizer: gemma-3-270m is not in $MODELS, so its vocabulary was left out")
    fi
}
PARITY_TESTS=(tests/test_forward_parity.py -k "greedy and smollm2")
PYTEST=(python -m pytest -q -p no:cacheprovider -o addopts=-ra)

declare -A RESULT SECS
NOTES=()
run_part() {
    local part=$1 t0=$SECONDS rc=0
    shift
    say "---- $part"
    in_root sh -c 'cd /src && exec "$@"' part "$@" || rc=$?
    SECS[$part]=$((SECONDS - t0))
    if [[ $rc -eq 0 ]]; then RESULT[$part]=passed; else RESULT[$part]="FAILED (exit $rc)"; fi
}

host_tools
build_root
copy_checkout
install_project
if [[ -n ${ARM64_REBUILD:-} ]]; then rm -rf "$ROOT/root/.cache/gguf-runtime/numba"; fi
in_root python -c "import platform, numba, llvmlite.binding as ll
from gguf_runtime.quants import simd
print(f'[check-aarch64] {platform.machine()} Python {platform.python_version()}, numba {numba.__version__}, '
      f'LLVM {\".\".join(map(str, ll.llvm_version_info))}, compiling for {numba.config.CPU_NAME}; '
      f'sdot {simd.USE_ARM_DOTPROD}, tbl {simd.USE_ARM_NEON}, hardware fp16 {simd.USE_NATIVE_F16}')"

for part in "${PARTS[@]}"; do
    case $part in
        tokenizer) tokenizer_tests ;;&
        kernels) run_part kernels "${PYTEST[@]}" "${KERNEL_TESTS[@]}" ;;
        asm) run_part asm python scripts/bench_kernels.py --asm ;;
        tokenizer) run_part tokenizer "${PYTEST[@]}" "${TOKENIZER_TESTS[@]}" ;;
        parity) run_part parity "${PYTEST[@]}" "${PARITY_TESTS[@]}" ;;
    esac
done

say "summary (aarch64 under qemu-user, numba compiling for $CPU; $(date -u +%Y-%m-%dT%H:%MZ))"
failed=0
for part in "${PARTS[@]}"; do
    printf '[check-aarch64]   %-10s %-18s %5d s\n' "$part" "${RESULT[$part]}" "${SECS[$part]}"
    [[ ${RESULT[$part]} == passed ]] || failed=1
done
for note in "${NOTES[@]}"; do say "note: $note"; done
say "wall time $((SECONDS - START)) s"
exit $failed
