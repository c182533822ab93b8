#include "window_level.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

#include "simd.h"

namespace streamtag {

namespace {

double Dbfs(double power) {
  if (!(power > 0.0)) return kSilenceDbfs;
  return std::max(kSilenceDbfs, 10.0 * std::log10(power));
}

void CheckWindowArguments(int64_t n_rows, int hop_length, double sample_rate) {
  if (n_rows < 1) {
    throw std::invalid_argument("a window level needs at least one frame, got " +
                                std::to_string(n_rows));
  }
  if (hop_length < 1) {
    throw std::invalid_argument("hop_length must be >= 1, got " + std::to_string(hop_length));
  }
  if (!(sample_rate > 0.0) || !std::isfinite(sample_rate)) {
    throw std::invalid_argument("sample_rate must be positive, got " +
                                std::to_string(sample_rate));
  }
}

}  // namespace

std::string WindowLevel::ToString() const {
  char text[256];
  std::snprintf(text, sizeof text,
                "rms_dbfs=%.2f peak_dbfs=%.2f clipped=%lld samples=%lld onsets=%lld "
                "onset_rate_hz=%.3f",
                rms_dbfs, peak_dbfs, static_cast<long long>(clipped),
                static_cast<long long>(samples), static_cast<long long>(onsets), onset_rate_hz);
  return text;
}

void CheckFrameLevels(const float *features, int64_t n_frames) {
  for (int64_t t = 0; t < n_frames; ++t) {
    const float *frame = features + t * kFrameLevelSize;
    for (int field = 0; field < kFrameLevelSize; ++field) {
      const float v = frame[field];
      bool ok = v >= 0.0f && v <= FLT_MAX;  // finite, not negative
      if (field == kClipped || field == kRealSamples) {
        ok = ok && v < 16777216.0f && static_cast<float>(static_cast<int32_t>(v)) == v;
      }
      if (!ok) {
        throw std::invalid_argument(
            "frame " + std::to_string(t) + ": " + kFrameLevelNames[field] + " must be " +
            (field == kClipped || field == kRealSamples ? "a whole number in [0, 2^24)"
                                                         : "finite and >= 0") +
            ", got " + std::to_string(v));
      }
    }
  }
}

int LevelStepFrames(int hop_length, int n_fft, double sample_rate) {
  if (hop_length < 1 || hop_length > n_fft) return 1;  // frames apart: measured one by one
  const double fit = std::floor(kLevelStepSeconds * sample_rate / hop_length + 1e-9);
  // A step's samples stay below 2^23, so its counts are exact in floats (any real rate does).
  const double most = std::max(1, (1 << 23) / hop_length);
  return static_cast<int>(std::max(1.0, std::min(fit, most)));
}

namespace {

// The per-frame kernels work in rounds of kBlockLanes values, lane l of the round taking value
// l; the lanes' partial sums are then added in one fixed tree (ReduceLanes). The SSE/NEON
// kernels hold the 32 lanes in eight 4-float vectors, the AVX2 ones in four 8-float vectors:
// each lane sees the same additions in the same order, so both give bitwise the same sums
// (-ffp-contract=off: no fused multiply-adds either), and the wider one half the instructions.
static_assert(kBlockLanes == 32, "the kernels below hold 32 lanes");

float ReduceLanes(const float *lanes) {
  using simd::V4;
  V4 s[8];
  for (int k = 0; k < 8; ++k) s[k] = simd::Load(lanes + 4 * k);
  const V4 total = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  return (total[0] + total[1]) + (total[2] + total[3]);
}

// A block's level from the sum and the max of the squares of its first `whole` samples (the
// rounds' lanes, reduced): the rest one by one, the peak, the clipped count.
inline void FinishBlock(const float *x, int64_t n, int64_t whole, float sum, float peak_squared,
                        float *level) {
  for (int64_t i = whole; i < n; ++i) {
    const float square = x[i] * x[i];
    sum += square;
    peak_squared = std::max(peak_squared, square);
  }
  const float peak = std::sqrt(peak_squared);
  int64_t clipped = 0;
  if (peak >= kClipLevel) {  // rare: count only when something reaches the clip level
    for (int64_t j = 0; j < n; ++j) clipped += std::fabs(x[j]) >= kClipLevel;
  }
  level[kSumSquares] = sum;
  level[kPeak] = peak;
  level[kClipped] = static_cast<float>(clipped);
  level[kRealSamples] = static_cast<float>(n);
}

// a > b ? a : b is one MAXPS (MAX on NEON); simd::Max's bit select is four operations.
inline simd::V4 Max4(simd::V4 a, simd::V4 b) { return a > b ? a : b; }

// Rounds of x^2 added into lanes[32], their max into *peak_squared (0 for no rounds).
void SquaresPortable(const float *x, int64_t rounds, float *lanes, float *peak_squared) {
  using simd::V4;
  V4 s[8], p0{}, p1{};
  for (int k = 0; k < 8; ++k) s[k] = simd::Load(lanes + 4 * k);
  for (int64_t r = 0; r < rounds; ++r, x += kBlockLanes) {
    V4 q[8];
    for (int k = 0; k < 8; ++k) {
      const V4 v = simd::Load(x + 4 * k);
      q[k] = v * v;
      s[k] += q[k];
    }
    p0 = Max4(p0, Max4(Max4(q[0], q[1]), Max4(q[2], q[3])));
    p1 = Max4(p1, Max4(Max4(q[4], q[5]), Max4(q[6], q[7])));
  }
  for (int k = 0; k < 8; ++k) simd::Store(lanes + 4 * k, s[k]);
  const V4 p = Max4(p0, p1);
  *peak_squared = std::max(std::max(p[0], p[1]), std::max(p[2], p[3]));
}

// Rounds of max(0, a - b) into lanes[32].
void RisesPortable(const float *a, const float *b, int64_t rounds, float *lanes) {
  using simd::V4;
  V4 s[8] = {};
  const V4 zero{};
  for (int64_t r = 0; r < rounds; ++r, a += kBlockLanes, b += kBlockLanes) {
    for (int k = 0; k < 8; ++k) s[k] += Max4(simd::Load(a + 4 * k) - simd::Load(b + 4 * k), zero);
  }
  for (int k = 0; k < 8; ++k) simd::Store(lanes + 4 * k, s[k]);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define STREAMTAG_HAVE_AVX2_KERNELS 1
typedef float V8 __attribute__((vector_size(32)));

__attribute__((target("avx2"))) inline V8 Load8(const float *p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
// a > b ? a : b, as one VMAXPS (the vector extension's form compiles to a compare and a mask
// when b is zero).
__attribute__((target("avx2"))) inline V8 Max8(V8 a, V8 b) {
  return (V8)_mm256_max_ps((__m256)a, (__m256)b);
}

// ReduceLanes' tree on lanes held in four 8-float vectors, in registers: its 4-float vectors
// 2k and 2k + 1 are the low and high halves of s[k], so each first sum is one vector's halves.
__attribute__((target("avx2"))) inline __m128 Halves(V8 s) {
  const __m256 v = (__m256)s;
  return _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
}
__attribute__((target("avx2"))) inline float ReduceLanesAvx2(V8 s0, V8 s1, V8 s2, V8 s3) {
  const __m128 total = _mm_add_ps(_mm_add_ps(Halves(s0), Halves(s1)),
                                  _mm_add_ps(Halves(s2), Halves(s3)));
  const __m128 low = _mm_add_ss(total, _mm_shuffle_ps(total, total, 1));  // t0 + t1
  const __m128 high = _mm_add_ss(_mm_movehl_ps(total, total), _mm_shuffle_ps(total, total, 3));
  return _mm_cvtss_f32(_mm_add_ss(low, high));
}

// One round of SquaresAvx2's: x[0 .. 32)^2 into the lanes s0..s3, their max into p0, p1.
__attribute__((target("avx2"))) inline void SquaresRound(const float *x, V8 &s0, V8 &s1,
                                                         V8 &s2, V8 &s3, V8 &p0, V8 &p1) {
  const V8 v0 = Load8(x), v1 = Load8(x + 8), v2 = Load8(x + 16), v3 = Load8(x + 24);
  const V8 q0 = v0 * v0, q1 = v1 * v1, q2 = v2 * v2, q3 = v3 * v3;
  s0 += q0;
  s1 += q1;
  s2 += q2;
  s3 += q3;
  p0 = Max8(p0, Max8(q0, q1));
  p1 = Max8(p1, Max8(q2, q3));
}

// Rounds of x^2 added into lanes[32], their max into *peak_squared (0 for no rounds):
// SquaresPortable's additions lane by lane, the lanes held in registers.
__attribute__((target("avx2"))) void SquaresAvx2(const float *x, int64_t rounds, float *lanes,
                                                 float *peak_squared) {
  V8 s0 = Load8(lanes), s1 = Load8(lanes + 8), s2 = Load8(lanes + 16), s3 = Load8(lanes + 24);
  V8 p0{}, p1{};
  for (int64_t r = 0; r < rounds; ++r, x += kBlockLanes) SquaresRound(x, s0, s1, s2, s3, p0, p1);
  std::memcpy(lanes, &s0, sizeof s0);
  std::memcpy(lanes + 8, &s1, sizeof s1);
  std::memcpy(lanes + 16, &s2, sizeof s2);
  std::memcpy(lanes + 24, &s3, sizeof s3);
  const __m256 p = (__m256)Max8(p0, p1);  // the max in any order: it is exact
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(p), _mm256_extractf128_ps(p, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  *peak_squared = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

// The mean over n values of max(0, current[b] - previous[b]), given rounds = n / kBlockLanes:
// RisesPortable's lanes in four 8-float vectors, reduced in registers by ReduceLanes' tree, then
// the rest one by one (Rise's additions, bitwise). A constant rounds unrolls the loop.
__attribute__((target("avx2"), always_inline)) inline float MeanRiseRoundsAvx2(
    const float *current, const float *previous, int n, int rounds) {
  V8 r0{}, r1{}, r2{}, r3{};
  const V8 zero{};
#pragma GCC unroll 8
  for (int b = 0; b < rounds; ++b) {
    const float *a = current + b * kBlockLanes, *c = previous + b * kBlockLanes;
    r0 += Max8(Load8(a) - Load8(c), zero);
    r1 += Max8(Load8(a + 8) - Load8(c + 8), zero);
    r2 += Max8(Load8(a + 16) - Load8(c + 16), zero);
    r3 += Max8(Load8(a + 24) - Load8(c + 24), zero);
  }
  float rises = ReduceLanesAvx2(r0, r1, r2, r3);
  for (int b = rounds * kBlockLanes; b < n; ++b) rises += std::max(0.0f, current[b] - previous[b]);
  return rises / static_cast<float>(n);
}

__attribute__((target("avx2"))) float MeanRiseAvx2(const float *current, const float *previous,
                                                   int n) {
  return MeanRiseRoundsAvx2(current, previous, n, n / kBlockLanes);
}

// MeasureBlock with the AVX2 kernels: the same additions lane by lane as SquaresAvx2 (two
// rounds a turn of the loop), reduced in registers.
__attribute__((target("avx2"))) void MeasureBlockAvx2(const float *x, int64_t n, float *level) {
  const int64_t rounds = n / kBlockLanes;
  V8 s0{}, s1{}, s2{}, s3{}, p0{}, p1{};
  const float *px = x, *const paired_end = x + (rounds & ~int64_t{1}) * kBlockLanes;
  for (; px != paired_end; px += 2 * kBlockLanes) {
    SquaresRound(px, s0, s1, s2, s3, p0, p1);
    SquaresRound(px + kBlockLanes, s0, s1, s2, s3, p0, p1);
  }
  if (rounds & 1) SquaresRound(px, s0, s1, s2, s3, p0, p1);
  const __m256 p = (__m256)Max8(p0, p1);  // the max in any order: it is exact
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(p), _mm256_extractf128_ps(p, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  FinishBlock(x, n, rounds * kBlockLanes, ReduceLanesAvx2(s0, s1, s2, s3),
              _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1))), level);
}

// MeasureBlocks with MeasureBlockAvx2 inlined in the loop (flatten).
__attribute__((target("avx2"), flatten)) bool MeasureBlocksAvx2(const float *x, int64_t count,
                                                       int64_t length, float *out, int stride) {
  bool finite = true;
  for (int64_t k = 0; k < count; ++k, x += length, out += stride) {
    MeasureBlockAvx2(x, length, out);
    finite &= out[kSumSquares] <= FLT_MAX;
  }
  return finite;
}

// MeanRiseRows with MeanRiseAvx2 inlined in the loop (flatten).
__attribute__((target("avx2"), flatten)) void MeanRiseRowsAvx2Any(const float *rows,
                                                                  const float *before, int n,
                                                                  int64_t stride,
                                                                  int64_t count, float *out) {
  for (int64_t r = 0; r < count; ++r, before = rows, rows += stride) {
    out[r] = MeanRiseAvx2(rows, before, n);
  }
}

// The same for n / kBlockLanes == kRounds, the rounds unrolled.
template <int kRounds>
__attribute__((target("avx2"))) void MeanRiseRowsAvx2Fixed(const float *rows,
                                                           const float *before, int n,
                                                           int64_t stride, int64_t count,
                                                           float *out) {
  for (int64_t r = 0; r < count; ++r, before = rows, rows += stride) {
    out[r] = MeanRiseRoundsAvx2(rows, before, n, kRounds);
  }
}

void MeanRiseRowsAvx2(const float *rows, const float *before, int n, int64_t stride,
                      int64_t count, float *out) {
  switch (n / kBlockLanes) {  // 32 to 287 bands: the common mel counts
    case 1: return MeanRiseRowsAvx2Fixed<1>(rows, before, n, stride, count, out);
    case 2: return MeanRiseRowsAvx2Fixed<2>(rows, before, n, stride, count, out);
    case 3: return MeanRiseRowsAvx2Fixed<3>(rows, before, n, stride, count, out);
    case 4: return MeanRiseRowsAvx2Fixed<4>(rows, before, n, stride, count, out);
    case 5: return MeanRiseRowsAvx2Fixed<5>(rows, before, n, stride, count, out);
    case 6: return MeanRiseRowsAvx2Fixed<6>(rows, before, n, stride, count, out);
    case 7: return MeanRiseRowsAvx2Fixed<7>(rows, before, n, stride, count, out);
    case 8: return MeanRiseRowsAvx2Fixed<8>(rows, before, n, stride, count, out);
    default: return MeanRiseRowsAvx2Any(rows, before, n, stride, count, out);
  }
}

__attribute__((target("avx2"))) bool AllFiniteAvx2(const float *x, int64_t n) {
  V8 a{}, b{};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const V8 u = Load8(x + i), v = Load8(x + i + 8);
    a += u - u;
    b += v - v;
  }
  const V8 sum = a + b;
  float rest = 0.0f;
  for (int l = 0; l < 8; ++l) rest += sum[l];
  for (; i < n; ++i) rest += x[i] - x[i];
  return rest == 0.0f;
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#endif

// A window's rows summed in order: fields 0 .. 3 (the sums of squares, the peak, clipped and
// real samples) and fields 1 .. 4 (the flux last) each as one 4-double vector of sums and the
// second also as a 4-float vector of maxima, the flux copied out for the onset picking. Lane by
// lane these are the additions of one field at a time in row order and the exact maximum, so
// the portable and AVX2 versions give the same bits.
typedef float RowV4f __attribute__((vector_size(16)));
typedef double RowV4d __attribute__((vector_size(32)));
struct RowTotals {
  RowV4d head = {0.0, 0.0, 0.0, 0.0}, tail = {0.0, 0.0, 0.0, 0.0};  // fields 0..3, 1..4
  RowV4f most = {0.0f, 0.0f, 0.0f, 0.0f};                            // fields 1..4
};

void AddRowsPortable(const float *row, int64_t count, float *flux, RowTotals &totals) {
  RowV4d head = totals.head, tail = totals.tail;
  RowV4f most = totals.most;
  for (int64_t i = 0; i < count; ++i, row += kFrameLevelSize) {
    RowV4f a, b;
    std::memcpy(&a, row, sizeof a);
    std::memcpy(&b, row + 1, sizeof b);
    head += __builtin_convertvector(a, RowV4d);
    tail += __builtin_convertvector(b, RowV4d);
    most = most > b ? most : b;  // MAXPS's rule
    flux[i] = row[kOnsetFlux];
  }
  totals.head = head;
  totals.tail = tail;
  totals.most = most;
}

#ifdef STREAMTAG_HAVE_AVX2_KERNELS
__attribute__((target("avx2"))) void AddRowsAvx2(const float *row, int64_t count, float *flux,
                                                 RowTotals &totals) {
  __m256d head = (__m256d)totals.head, tail = (__m256d)totals.tail;
  __m128 most = (__m128)totals.most;
  for (int64_t i = 0; i < count; ++i, row += kFrameLevelSize) {
    const __m128 b = _mm_loadu_ps(row + 1);
    head = _mm256_add_pd(head, _mm256_cvtps_pd(_mm_loadu_ps(row)));
    tail = _mm256_add_pd(tail, _mm256_cvtps_pd(b));
    most = _mm_max_ps(most, b);
    flux[i] = row[kOnsetFlux];
  }
  totals.head = (RowV4d)head;
  totals.tail = (RowV4d)tail;
  totals.most = (RowV4f)most;
}
#endif

void AddRows(const float *row, int64_t count, float *flux, RowTotals &totals, bool portable) {
#ifdef STREAMTAG_HAVE_AVX2_KERNELS
  if (!portable && HasAvx2()) return AddRowsAvx2(row, count, flux, totals);
#endif
  AddRowsPortable(row, count, flux, totals);
}

// The onset picking's pass over a window's flux: the values at or below the mean (their sum in
// 8 float lanes, value t in lane t % 8 while whole rounds of 8 are left, then the rest in order
// into `rest`, and their count) and the peaks at or above the threshold, in order.
struct OnsetScan {
  float lanes[8] = {};
  float rest = 0.0f;
  int64_t quiet = 0, candidates = 0;
};

// Whether flux[t] is the largest within +-radius (ties go to the earlier value).
inline bool IsPeak(const float *flux, int64_t n, int64_t t, int64_t radius) {
  const float f = flux[t];
  for (int64_t u = std::max<int64_t>(0, t - radius); u < t; ++u) {
    if (!(f > flux[u])) return false;
  }
  for (int64_t u = t + 1; u <= std::min(n - 1, t + radius); ++u) {
    if (!(f >= flux[u])) return false;
  }
  return true;
}

// The values [from, n) one by one: those before the last whole round (n / 8 * 8) into their
// lanes, the rest into `rest`. The portable scan is this from 0; the AVX2 one ends with it.
// (The vector form adds +0 to a lane for a value that is not quiet: the same sum, since a lane
// is never -0.)
void ScanValues(const float *flux, int64_t from, int64_t n, float at_most_mean, float at_least,
                int64_t radius, int64_t *found, OnsetScan &scan) {
  const int64_t whole = n / 8 * 8;
  for (int64_t t = from; t < n; ++t) {
    const float f = flux[t];
    if (f <= at_most_mean) {
      (t < whole ? scan.lanes[t % 8] : scan.rest) += f;
      ++scan.quiet;
    } else if (f >= at_least && IsPeak(flux, n, t, radius)) {
      found[scan.candidates++] = t;
    }
  }
}

#ifdef STREAMTAG_HAVE_AVX2_KERNELS
__attribute__((target("avx2,popcnt"))) void ScanOnsetsAvx2(const float *flux, int64_t n,
                                                           float at_most_mean, float at_least,
                                                           int64_t radius, int64_t *found,
                                                           OnsetScan &scan) {
  const int64_t whole = n / 8 * 8;
  const __m256 mean = _mm256_set1_ps(at_most_mean), threshold = _mm256_set1_ps(at_least);
  __m256 lanes = _mm256_setzero_ps();
  int64_t quiet = 0, candidates = 0;
  for (int64_t t = 0; t < whole; t += 8) {
    const __m256 v = _mm256_loadu_ps(flux + t);
    const __m256 low = _mm256_cmp_ps(v, mean, _CMP_LE_OQ);
    lanes = _mm256_add_ps(lanes, _mm256_and_ps(low, v));
    quiet += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(low)));
    // At or above the threshold and not among the quiet ones (as the portable rule has it when
    // every value is the same).
    unsigned high = static_cast<unsigned>(_mm256_movemask_ps(
        _mm256_andnot_ps(low, _mm256_cmp_ps(v, threshold, _CMP_GE_OQ))));
    while (high != 0) {
      const int64_t u = t + __builtin_ctz(high);
      high &= high - 1;
      if (IsPeak(flux, n, u, radius)) found[candidates++] = u;
    }
  }
  _mm256_storeu_ps(scan.lanes, lanes);
  scan.quiet = quiet;
  scan.candidates = candidates;
  ScanValues(flux, whole, n, at_most_mean, at_least, radius, found, scan);
}
#endif

void ScanOnsets(const float *flux, int64_t n, float at_most_mean, float at_least,
                int64_t radius, int64_t *found, OnsetScan &scan, bool portable) {
#ifdef STREAMTAG_HAVE_AVX2_KERNELS
  if (!portable && HasAvx2()) {
    return ScanOnsetsAvx2(flux, n, at_most_mean, at_least, radius, found, scan);
  }
#endif
  ScanValues(flux, 0, n, at_most_mean, at_least, radius, found, scan);
}

// The onsets of a window's n flux values (the rule beside the constants in the header), given
// their sum and max; rows_per_second of them.
int64_t CountOnsets(const float *flux, int64_t n, double rows_per_second, double flux_sum,
                    float flux_max, bool portable) {
  if (!(flux_max >= kMinOnsetFluxDb)) return 0;  // nothing rises enough (silence: all 0)
  const int64_t radius = std::max<int64_t>(
      1, static_cast<int64_t>(std::lround(kOnsetNeighbourhoodSeconds * rows_per_second)));
  const int64_t min_gap = std::max<int64_t>(
      1, static_cast<int64_t>(std::ceil(kOnsetMinGapSeconds * rows_per_second - 1e-9)));
  const double mean = flux_sum / static_cast<double>(n);
  const double threshold =
      std::max(kMinOnsetFluxDb, mean + kOnsetDelta * (flux_max - mean));
  // The comparisons in float: f <= mean exactly when f <= at_most_mean, the largest float not
  // above it, and f >= threshold when f >= at_least, the smallest float not below it.
  float at_most_mean = static_cast<float>(mean), at_least = static_cast<float>(threshold);
  if (static_cast<double>(at_most_mean) > mean) {
    at_most_mean = std::nextafter(at_most_mean, -HUGE_VALF);
  }
  if (static_cast<double>(at_least) < threshold) at_least = std::nextafter(at_least, HUGE_VALF);
  // One pass: the peaks above the threshold (the candidates, in order) and the background (the
  // mean of the values at or below the window's mean). Then the contrast and the gap, in order:
  // whether a row is a peak does not depend on the onsets before it. Two peaks are more than
  // radius rows apart (each is above the other otherwise).
  const int64_t most = n / (radius + 1) + 1;
  int64_t on_stack[256];
  std::vector<int64_t> on_heap(most > 256 ? static_cast<size_t>(most) : 0);
  int64_t *found = most > 256 ? on_heap.data() : on_stack;
  OnsetScan scan;
  ScanOnsets(flux, n, at_most_mean, at_least, radius, found, scan, portable);
  const float *l = scan.lanes;
  const float quiet_sum = (((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]))) +
                          scan.rest;
  const double contrast_floor =
      kOnsetContrast *
      (scan.quiet > 0 ? static_cast<double>(quiet_sum) / static_cast<double>(scan.quiet) : 0.0);
  int64_t onsets = 0, last = 0;
  for (int64_t c = 0; c < scan.candidates; ++c) {
    const int64_t t = found[c];
    if (flux[t] < contrast_floor || (onsets > 0 && t - last < min_gap)) continue;
    ++onsets;
    last = t;
  }
  return onsets;
}

// Whether every one of x[0 .. n) is finite: x - x is +0 for a finite x and NaN for an infinite
// or NaN one, and a sum with a NaN in it is NaN. Three vector operations per vector of samples,
// against a compare and a count per sample for counting them (the rare input with a
// non-finite sample is counted afterwards).
bool AllFinitePortable(const float *x, int64_t n) {
  using simd::V4;
  V4 a{}, b{};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const V4 u = simd::Load(x + i), v = simd::Load(x + i + 4);
    a += u - u;
    b += v - v;
  }
  const V4 sum = a + b;
  float rest = (sum[0] + sum[1]) + (sum[2] + sum[3]);
  for (; i < n; ++i) rest += x[i] - x[i];
  return rest == 0.0f;
}

// The kernels for this CPU: AVX2 where it has it (unless portable is asked for), else SSE/NEON.
void Squares(const float *x, int64_t rounds, float *lanes, float *peak_squared, bool portable) {
#ifdef STREAMTAG_HAVE_AVX2_KERNELS
  if (!portable && HasAvx2()) return SquaresAvx2(x, rounds, lanes, peak_squared);
#endif
  SquaresPortable(x, rounds, lanes, peak_squared);
}

void Measure(const float *x, int64_t n, float *level, bool portable) {
#ifdef STREAMTAG_HAVE_AVX2_KERNELS
  if (!portable && HasAvx2()) return MeasureBlockAvx2(x, n, level);
#endif
  // The peak is sqrt(max x^2): exactly max |x| in binary floating point while x^2 neither
  // underflows nor overflows, and it saves taking |x| of every sample.
  alignas(32) float lanes[kBlockLanes] = {};
  float peak_squared = 0.0f;
  const int64_t rounds = n / kBlockLanes;
  Squares(x, rounds, lanes, &peak_squared, portable);
  FinishBlock(x, n, rounds * kBlockLanes, ReduceLanes(lanes), peak_squared, level);
}

float Rise(const float *current, const float *previous, int n, bool portable) {
#ifdef STREAMTAG_HAVE_AVX2_KERNELS
  if (!portable && HasAvx2()) return MeanRiseAvx2(current, previous, n);
#endif
  alignas(32) float lanes[kBlockLanes];
  const int64_t rounds = n / kBlockLanes;
  RisesPortable(current, previous, rounds, lanes);
  float sum = ReduceLanes(lanes);
  for (int64_t b = rounds * kBlockLanes; b < n; ++b) {
    sum += std::max(0.0f, current[b] - previous[b]);
  }
  return sum / static_cast<float>(n);
}

void FrameLevel(const float *x, int64_t n, const float *current, const float *previous,
                int n_mels, float flux_scale, float *level, bool portable) {
#ifdef STREAMTAG_HAVE_AVX2_KERNELS
  if (!portable && HasAvx2()) {
    MeasureBlockAvx2(x, n, level);
    level[kOnsetFlux] =
        previous == nullptr ? 0.0f : MeanRiseAvx2(current, previous, n_mels) * flux_scale;
    return;
  }
#endif
  Measure(x, n, level, portable);
  level[kOnsetFlux] =
      previous == nullptr ? 0.0f : Rise(current, previous, n_mels, portable) * flux_scale;
}

}  // namespace

void MeasureFrameLevel(const float *x, int64_t n, const float *current, const float *previous,
                       int n_mels, float flux_scale, float *level) {
  FrameLevel(x, n, current, previous, n_mels, flux_scale, level, false);
}
void MeasureFrameLevelPortable(const float *x, int64_t n, const float *current,
                               const float *previous, int n_mels, float flux_scale,
                               float *level) {
  FrameLevel(x, n, current, previous, n_mels, flux_scale, level, true);
}

void MeasureBlock(const float *x, int64_t n, float *level) { Measure(x, n, level, false); }

bool MeasureBlocks(const float *x, int64_t count, int64_t length, float *out, int stride) {
#ifdef STREAMTAG_HAVE_AVX2_KERNELS
  if (HasAvx2()) return MeasureBlocksAvx2(x, count, length, out, stride);
#endif
  bool finite = true;
  for (int64_t k = 0; k < count; ++k, x += length, out += stride) {
    Measure(x, length, out, true);
    finite &= out[kSumSquares] <= FLT_MAX;
  }
  return finite;
}
void MeasureBlockPortable(const float *x, int64_t n, float *level) {
  Measure(x, n, level, true);
}

float MeanRise(const float *current, const float *previous, int n) {
  return Rise(current, previous, n, false);
}
float MeanRisePortable(const float *current, const float *previous, int n) {
  return Rise(current, previous, n, true);
}

void MeanRiseRows(const float *rows, const float *before, int n, int64_t stride, int64_t count,
                  float *out) {
#ifdef STREAMTAG_HAVE_AVX2_KERNELS
  if (HasAvx2()) return MeanRiseRowsAvx2(rows, before, n, stride, count, out);
#endif
  for (int64_t r = 0; r < count; ++r, before = rows, rows += stride) {
    out[r] = Rise(rows, before, n, true);
  }
}

bool AllFinite(const float *x, int64_t n) {
#ifdef STREAMTAG_HAVE_AVX2_KERNELS
  if (HasAvx2()) return AllFiniteAvx2(x, n);
#endif
  return AllFinitePortable(x, n);
}

void BlockMeter::Clear() {
  std::fill(lanes_, lanes_ + kBlockLanes, 0.0f);
  waiting_count_ = 0;
  peak_squared_ = 0.0f;
  clipped_ = samples_ = 0;
}

void BlockMeter::Add(const float *x, int64_t n) {
  if (n <= 0) return;
  float peak_squared = 0.0f, m;
  const float *p = x;
  int64_t left = n;
  if (waiting_count_ > 0) {  // complete the waiting round first
    const int64_t take = std::min<int64_t>(kBlockLanes - waiting_count_, left);
    std::copy(p, p + take, waiting_ + waiting_count_);
    waiting_count_ += static_cast<int>(take);
    p += take;
    left -= take;
    if (waiting_count_ < kBlockLanes) {
      for (int64_t i = 0; i < take; ++i) peak_squared = std::max(peak_squared, x[i] * x[i]);
    } else {
      Squares(waiting_, 1, lanes_, &m, false);
      peak_squared = m;  // the round's max: the waiting samples' squares are in it
      waiting_count_ = 0;
    }
  }
  const int64_t rounds = left / kBlockLanes;
  if (rounds > 0) {
    Squares(p, rounds, lanes_, &m, false);
    peak_squared = std::max(peak_squared, m);
    p += rounds * kBlockLanes;
    left -= rounds * kBlockLanes;
  }
  for (int64_t i = 0; i < left; ++i) {  // an incomplete round waits (none was waiting)
    waiting_[i] = p[i];
    peak_squared = std::max(peak_squared, p[i] * p[i]);
  }
  if (left > 0) waiting_count_ = static_cast<int>(left);
  peak_squared_ = std::max(peak_squared_, peak_squared);
  if (std::sqrt(peak_squared) >= kClipLevel) {  // rare: count while the samples are at hand
    for (int64_t i = 0; i < n; ++i) clipped_ += std::fabs(x[i]) >= kClipLevel;
  }
  samples_ += n;
}

bool BlockMeter::Finish(float *level) {
  // FinishBlock's additions: the lanes reduced, then the waiting samples one by one.
  float sum = ReduceLanes(lanes_), peak_squared = peak_squared_;
  for (int i = 0; i < waiting_count_; ++i) {
    const float square = waiting_[i] * waiting_[i];
    sum += square;
    peak_squared = std::max(peak_squared, square);
  }
  level[kSumSquares] = sum;
  level[kPeak] = std::sqrt(peak_squared);
  level[kClipped] = static_cast<float>(clipped_);
  level[kRealSamples] = static_cast<float>(samples_);
  Clear();
  return sum <= FLT_MAX;
}

bool BlockMeter::PartFinite() const {
  float sum = ReduceLanes(lanes_);
  for (int i = 0; i < waiting_count_; ++i) sum += waiting_[i] * waiting_[i];
  return sum <= FLT_MAX;
}

namespace {

WindowLevel LevelOfRuns(const float *first, int64_t first_rows, const float *second,
                        int64_t second_rows, int hop_length, double sample_rate, bool portable) {
  const int64_t n = first_rows + second_rows;
  CheckWindowArguments(n, hop_length, sample_rate);
  // The flux values laid end to end for the onset picking, while the rows are summed.
  float on_stack[512];
  std::vector<float> on_heap(n > 512 ? static_cast<size_t>(n) : 0);
  float *flux = n > 512 ? on_heap.data() : on_stack;
  RowTotals totals;
  AddRows(first, first_rows, flux, totals, portable);
  if (second_rows > 0) AddRows(second, second_rows, flux + first_rows, totals, portable);
  // Whole numbers below 2^24 in floats: their sums in double are exact.
  const double sum_squares = totals.head[kSumSquares], clipped = totals.head[kClipped],
               samples = totals.head[kRealSamples], flux_sum = totals.tail[kOnsetFlux - 1];
  const float peak = totals.most[kPeak - 1], flux_max = totals.most[kOnsetFlux - 1];
  WindowLevel level;
  level.rms_dbfs = samples > 0 ? Dbfs(sum_squares / samples) : kSilenceDbfs;
  level.peak_dbfs = Dbfs(static_cast<double>(peak) * peak);
  level.clipped = static_cast<int64_t>(clipped);
  level.samples = static_cast<int64_t>(samples);
  const double rows_per_second = sample_rate / hop_length;
  level.onsets = CountOnsets(flux, n, rows_per_second, flux_sum, flux_max, portable);
  level.onset_rate_hz = static_cast<double>(level.onsets) /
                        (static_cast<double>(n) * hop_length / sample_rate);
  return level;
}

}  // namespace

WindowLevel WindowLevelOf(const float *features, int64_t n_frames, int hop_length,
                          double sample_rate) {
  return LevelOfRuns(features, n_frames, nullptr, 0, hop_length, sample_rate, false);
}

WindowLevel WindowLevelOf(const float *first, int64_t first_rows, const float *second,
                          int64_t second_rows, int hop_length, double sample_rate) {
  return LevelOfRuns(first, first_rows, second, second_rows, hop_length, sample_rate, false);
}

WindowLevel WindowLevelOfPortable(const float *features, int64_t n_frames, int hop_length,
                                  double sample_rate) {
  return LevelOfRuns(features, n_frames, nullptr, 0, hop_length, sample_rate, true);
}

}  // namespace streamtag
