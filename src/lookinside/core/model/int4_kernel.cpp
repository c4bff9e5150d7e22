// int4 weights times int8 activations on the CPU with AVX512-VNNI: the kernel of lookinside's int4 layers
// (core/model/int4_kernel.py builds it and calls it; docs/benchmarks.md has its measurements).
//
// The weights: N output rows, K inputs in groups of 32, each group a scale d and, for an asymmetric group, an
// offset m (w = d * q + m, q = 0..15; a symmetric group, Q4_0's, has m = -8 d and stores none). The groups go in
// blocks of 16: in a block, four 64-byte registers per row, byte 4l + t of register j (0..3) holding value
// 4j + t of the block's group l in its low nibble and value 4(j + 4) + t in its high one. So one `and` and one
// `shift, and` give two registers of 64 values, and `vpdpbusd` (unsigned 4-bit times signed 8-bit, four products
// summed per 32-bit lane) leaves group l's dot product in lane l: eight of them make a block's 16 dot products,
// which take one conversion and one multiply-add by the 16 scales. Rows go in tiles of 4 (the activation
// registers loaded once for them), each tile one stretch of memory: its nibbles block by block, row by row,
// then its scales (4 x K / 32, row by row), then its offsets; scales and offsets float16 or float32.
//
// The activations: each row rounded to int8 per group of 32 (scale dx = max |x| / 127, as llama.cpp's q8_0)
// and laid out as the weights are, with dx_g and dx_g times the sum of the group's int8 values, s_g:
//     y = sum_g (d_g * dx_g * dot_g + m_g * dx_g * s_g).
//
// Plain C ABI, called through ctypes. Threads through OpenMP, whose runtime is torch's own (the libgomp.so.1
// torch has loaded), the count passed in by the caller (torch.get_num_threads()).

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <vector>

namespace {

constexpr int64_t GROUP = 32;
constexpr int64_t BLOCK = 16;  // groups per block: one 32-bit lane each
constexpr int ROWS = 4;  // output rows per tile: the activation registers are loaded once for them
constexpr int COLS_MAX = 4;  // activation rows at once: each unpacked weight register serves them all
#ifndef PREFETCH
#define PREFETCH 16384  // bytes ahead in the weights' stream: 16 KB measured best here (docs/benchmarks.md)
#endif
#ifndef PF_HINT
#define PF_HINT _MM_HINT_T1  // into L2: into L1 it was half as fast
#endif

// The bytes one tile of ROWS output rows takes: its nibbles, then its scales, then its offsets.
inline int64_t tile_size(int64_t k, bool f32, bool offsets) {
    return ROWS * (k / 2 + (k / GROUP) * (f32 ? 4 : 2) * (offsets ? 2 : 1));
}

// Up to 16 group scales (or offsets) as floats, the rest zero.
template <bool F32>
inline __m512 load16(const void* p, int64_t i, __mmask16 keep) {
    if constexpr (F32) {
        return _mm512_maskz_loadu_ps(keep, static_cast<const float*>(p) + i);
    } else {
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(keep, static_cast<const uint16_t*>(p) + i));
    }
}

// The activation rows rounded to int8 per group (scale dx = max |x| / 127, as llama.cpp's q8_0), laid out as
// the weights are: in blocks of BLOCK groups, int8 register j (0..7) of a block holding, in its 32-bit lane l,
// the four values 4j..4j+3 of the block's group l. Per block, dx of each group (scales) and dx times the sum of
// the group's int8 values (sums), BLOCK floats each, zero past the row's last group.
void quantize_rows(const float* x, int64_t m_rows, int64_t k, int8_t* xq, float* scales, float* sums, int threads) {
    const int64_t groups = k / GROUP, blocks = (groups + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) num_threads(threads) if (m_rows > 1)
    for (int64_t r = 0; r < m_rows; ++r) {
        int8_t* row = xq + r * blocks * BLOCK * GROUP;
        float* dx = scales + r * blocks * BLOCK;
        float* sx = sums + r * blocks * BLOCK;
        for (int64_t i = groups * GROUP; i < blocks * BLOCK * GROUP; ++i) row[i] = 0;
        for (int64_t g = groups; g < blocks * BLOCK; ++g) dx[g] = sx[g] = 0.0f;
        for (int64_t g = 0; g < groups; ++g) {
            const float* src = x + r * k + g * GROUP;
            const __m512 a = _mm512_loadu_ps(src), b = _mm512_loadu_ps(src + 16);
            const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
            const float d = amax / 127.0f;
            const __m512 inv = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
            const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, inv));  // rounded to nearest
            const __m512i qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, inv));
            alignas(16) int8_t q[GROUP];
            _mm_store_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtsepi32_epi8(qa));
            _mm_store_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtsepi32_epi8(qb));
            const int64_t block = g / BLOCK, lane = g % BLOCK;
            int8_t* dst = row + block * BLOCK * GROUP + lane * 4;
            for (int j = 0; j < 8; ++j) __builtin_memcpy(dst + j * 64, q + 4 * j, 4);
            dx[g] = d;
            sx[g] = d * static_cast<float>(_mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)));
        }
    }
}

// One tile of ROWS output rows times COLS quantized activation rows (a prefill's, or a batch's): each weight
// register is unpacked once for all of them. Every output is the same sequence of operations whatever COLS is, so
// a row's numbers do not depend on the rows beside it.
template <bool F32, bool OFFSETS, int COLS>
inline void tile_times_rows(const uint8_t* tile, int64_t k, const int8_t* xq, const float* scales, const float* sums,
                            int64_t padded, float* y, int64_t n, bool prefetch) {
    const int64_t groups = k / GROUP;
    const void* d = tile + ROWS * k / 2;
    const void* m = static_cast<const uint8_t*>(d) + ROWS * groups * (F32 ? 4 : 2);
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    __m512 acc[ROWS][COLS];
    for (int r = 0; r < ROWS; ++r)
        for (int c = 0; c < COLS; ++c) acc[r][c] = _mm512_setzero_ps();
    const uint8_t* q = tile;
    const uint8_t* ahead = tile + PREFETCH;
    for (int64_t g = 0; g < groups; g += BLOCK) {
        const int64_t count = groups - g < BLOCK ? groups - g : BLOCK;  // groups in this block
        const int64_t bytes = 4 * count;  // of one register's worth, per row
        const __mmask64 keep = count == BLOCK ? ~0ULL : (1ULL << bytes) - 1;
        const __mmask16 lanes = count == BLOCK ? 0xFFFF : static_cast<__mmask16>((1u << count) - 1);
        if (prefetch) {  // the tile's bytes, its scales included, fetched PREFETCH ahead at the pace they are read
            const int64_t step = ROWS * count * (GROUP / 2 + (F32 ? 4 : 2) * (OFFSETS ? 2 : 1));
            for (int64_t line = 0; line < step; line += 64)
                _mm_prefetch(reinterpret_cast<const char*>(ahead + line), PF_HINT);
            ahead += step;
        }
        for (int r = 0; r < ROWS; ++r) {
            __m512i low[4], high[4];
            for (int j = 0; j < 4; ++j) {
                const __m512i b = _mm512_maskz_loadu_epi8(keep, q + (r * 4 + j) * bytes);
                low[j] = _mm512_and_si512(b, nibble);
                high[j] = _mm512_and_si512(_mm512_srli_epi16(b, 4), nibble);
            }
            const __m512 w = load16<F32>(d, r * groups + g, lanes);
            for (int c = 0; c < COLS; ++c) {
                const int8_t* xb = xq + c * padded * GROUP + g * GROUP;
                const __m512 dx = _mm512_loadu_ps(scales + c * padded + g), sx = _mm512_loadu_ps(sums + c * padded + g);
                __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
                for (int j = 0; j < 4; ++j) {
                    even = _mm512_dpbusd_epi32(even, low[j], _mm512_loadu_si512(xb + j * 64));
                    odd = _mm512_dpbusd_epi32(odd, high[j], _mm512_loadu_si512(xb + (j + 4) * 64));
                }
                const __m512 dot = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(even, odd)), dx);  // dx_g dot_g
                if constexpr (OFFSETS) {
                    acc[r][c] = _mm512_fmadd_ps(dot, w, _mm512_fmadd_ps(load16<F32>(m, r * groups + g, lanes), sx,
                                                                         acc[r][c]));
                } else {  // m = -8 d
                    acc[r][c] = _mm512_fmadd_ps(_mm512_fnmadd_ps(_mm512_set1_ps(8.0f), sx, dot), w, acc[r][c]);
                }
            }
        }
        q += ROWS * 4 * bytes;
    }
    for (int c = 0; c < COLS; ++c)
        for (int r = 0; r < ROWS; ++r) y[c * n + r] = _mm512_reduce_add_ps(acc[r][c]);
}

template <bool F32, bool OFFSETS>
void linear(const float* x, int64_t m_rows, int64_t k, int64_t n, const uint8_t* tiles, float* y, int threads) {
    const int64_t padded = (k / GROUP + BLOCK - 1) / BLOCK * BLOCK;  // groups, to whole blocks
    std::vector<int8_t> xq(m_rows * padded * GROUP);
    std::vector<float> scales(m_rows * padded), sums(m_rows * padded);
    quantize_rows(x, m_rows, k, xq.data(), scales.data(), sums.data(), threads);
    const int64_t count = n / ROWS, tile_bytes = tile_size(k, F32, OFFSETS);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < count; ++t) {
        for (int64_t r = 0; r < m_rows; r += COLS_MAX) {  // the tile stays in L1 for the next activation rows
            const uint8_t* tile = tiles + t * tile_bytes;
            const int8_t* q = xq.data() + r * padded * GROUP;
            const float* dx = scales.data() + r * padded;
            const float* sx = sums.data() + r * padded;
            float* out = y + r * n + t * ROWS;
            switch (m_rows - r < COLS_MAX ? m_rows - r : COLS_MAX) {
                case 1: tile_times_rows<F32, OFFSETS, 1>(tile, k, q, dx, sx, padded, out, n, r == 0); break;
                case 2: tile_times_rows<F32, OFFSETS, 2>(tile, k, q, dx, sx, padded, out, n, r == 0); break;
                case 3: tile_times_rows<F32, OFFSETS, 3>(tile, k, q, dx, sx, padded, out, n, r == 0); break;
                default: tile_times_rows<F32, OFFSETS, COLS_MAX>(tile, k, q, dx, sx, padded, out, n, r == 0); break;
            }
        }
    }
}

}  // namespace

extern "C" {

// y (M, N) = x (M, K) times the int4 weights' transpose, the weights in tiles of 4 output rows (see the top);
// `scales_f32`: the scales and offsets are float32, else float16; `offsets` 0: symmetric groups.
// Returns 0, or -1 for a shape it cannot take (K a multiple of 32, N of 4).
int lookinside_int4_linear(const float* x, int64_t m_rows, int64_t k, int64_t n, const uint8_t* tiles,
                           int scales_f32, int offsets, float* y, int threads) {
    if (k <= 0 || k % GROUP != 0 || n <= 0 || n % ROWS != 0 || m_rows <= 0 || threads <= 0) return -1;
    if (scales_f32) {
        if (offsets) linear<true, true>(x, m_rows, k, n, tiles, y, threads);
        else linear<true, false>(x, m_rows, k, n, tiles, y, threads);
    } else {
        if (offsets) linear<false, true>(x, m_rows, k, n, tiles, y, threads);
        else linear<false, false>(x, m_rows, k, n, tiles, y, threads);
    }
    return 0;
}

// The bytes of one tile, for the packing in Python to check its own.
int64_t lookinside_int4_tile_size(int64_t k, int scales_f32, int offsets) {
    return tile_size(k, scales_f32 != 0, offsets != 0);
}

}  // extern "C"
