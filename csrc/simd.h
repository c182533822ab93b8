// Four-lane float vectors through the GCC/Clang vector extension: portable SIMD (SSE on x86-64,
// NEON on ARM) without intrinsics. Loads and stores are unaligned.
#ifndef STREAMTAG_SIMD_H_
#define STREAMTAG_SIMD_H_

#include <cstdint>
#include <cstring>

namespace streamtag {
namespace simd {

typedef float V4 __attribute__((vector_size(16)));
typedef int32_t V4i __attribute__((vector_size(16)));

inline V4 Load(const float *p) {
  V4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void Store(float *p, V4 v) { std::memcpy(p, &v, sizeof v); }
inline V4 Splat(float x) { return V4{x, x, x, x}; }

#if defined(__clang__)
#define STREAMTAG_SHUFFLE(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define STREAMTAG_SHUFFLE(a, b, i0, i1, i2, i3) \
  __builtin_shuffle(a, b, ::streamtag::simd::V4i{i0, i1, i2, i3})
#endif

inline V4 Select(V4i mask, V4 a, V4 b) { return (V4)((((V4i)a) & mask) | (((V4i)b) & ~mask)); }
inline V4 Max(V4 a, V4 b) { return Select(a > b, a, b); }
inline V4 Min(V4 a, V4 b) { return Select(a < b, a, b); }

inline V4 Reverse(V4 a) { return STREAMTAG_SHUFFLE(a, a, 3, 2, 1, 0); }

// Rows r0..r3 become columns, in place.
inline void Transpose(V4 &r0, V4 &r1, V4 &r2, V4 &r3) {
  const V4 t0 = STREAMTAG_SHUFFLE(r0, r1, 0, 4, 1, 5);
  const V4 t1 = STREAMTAG_SHUFFLE(r2, r3, 0, 4, 1, 5);
  const V4 t2 = STREAMTAG_SHUFFLE(r0, r1, 2, 6, 3, 7);
  const V4 t3 = STREAMTAG_SHUFFLE(r2, r3, 2, 6, 3, 7);
  r0 = STREAMTAG_SHUFFLE(t0, t1, 0, 1, 4, 5);
  r1 = STREAMTAG_SHUFFLE(t0, t1, 2, 3, 6, 7);
  r2 = STREAMTAG_SHUFFLE(t2, t3, 0, 1, 4, 5);
  r3 = STREAMTAG_SHUFFLE(t2, t3, 2, 3, 6, 7);
}

// Natural logarithm of positive normal floats (FLT_MIN .. FLT_MAX), within 2 ulp of logf:
// x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m - 1) / (m + 1), whose odd
// series converges fast because |s| <= 0.172.
inline V4 Log(V4 x) {
  // Casts between vector types of one size reinterpret the bits (the extension's rule).
  const V4i bits = (V4i)x;
  V4i e = ((bits >> 23) & 0xff) - 127;
  V4 m = (V4)((bits & 0x007fffff) | 0x3f800000);
  const V4i big = m > Splat(1.41421356237f);  // lanes: -1 where true
  m = Select(big, m * Splat(0.5f), m);
  e -= big;  // big is -1 where the mantissa was halved
  const V4 s = (m - Splat(1.0f)) / (m + Splat(1.0f));
  const V4 s2 = s * s;
  const V4 poly =
      Splat(1.0f) +
      s2 * (Splat(1.0f / 3) + s2 * (Splat(1.0f / 5) + s2 * (Splat(1.0f / 7) + s2 * Splat(1.0f / 9))));
  const V4 ef = __builtin_convertvector(e, V4);
  return ef * Splat(0.693145752f) + (Splat(2.0f) * s * poly + ef * Splat(1.42860677e-6f));
}

}  // namespace simd
}  // namespace streamtag

#endif  // STREAMTAG_SIMD_H_
