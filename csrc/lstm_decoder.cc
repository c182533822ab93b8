#include "lstm_decoder.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) && !defined(__clang__)
#define STREAMTAG_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define STREAMTAG_CLONES
#endif

namespace streamtag {
namespace {

typedef float V8 __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));

constexpr int kStreamBlock = 4;  // streams whose gates are made together

inline V8 Splat8(float x) { return V8{} + x; }
inline V8 Load8(const float *p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void Store8(float *p, V8 v) { std::memcpy(p, &v, sizeof v); }
inline V8 Select8(V8i mask, V8 a, V8 b) {
  return (V8)((((V8i)a) & mask) | (((V8i)b) & ~mask));
}

inline V8 ExpOf(V8 x) {
  x = Select8(x < Splat8(-80.0f), Splat8(-80.0f), x);
  x = Select8(x > Splat8(80.0f), Splat8(80.0f), x);
  // x = n ln 2 + r with |r| <= ln 2 / 2; ln 2 in two parts, so that n ln 2 is exact enough
  const V8 scaled = x * Splat8(1.44269504088896341f);
  const V8 half = Select8(scaled >= Splat8(0.0f), Splat8(0.5f), Splat8(-0.5f));
  const V8i n = __builtin_convertvector(scaled + half, V8i);  // rounded half away from zero
  const V8 nf = __builtin_convertvector(n, V8);
  const V8 r = (x - nf * Splat8(0.693145751953125f)) - nf * Splat8(1.428606765330187e-06f);
  // e^r by its Taylor series to r^6: the first term left out is under 1.3e-7 of it
  V8 p = Splat8(1.0f / 720.0f);
  p = p * r + Splat8(1.0f / 120.0f);
  p = p * r + Splat8(1.0f / 24.0f);
  p = p * r + Splat8(1.0f / 6.0f);
  p = p * r + Splat8(0.5f);
  p = p * r + Splat8(1.0f);
  p = p * r + Splat8(1.0f);
  const V8i bits = (n + 127) << 23;  // 2^n for n in [-116, 116]: a normal float
  V8 two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

inline V8 SigmoidOf(V8 x) { return Splat8(1.0f) / (Splat8(1.0f) + ExpOf(-x)); }

inline V8 TanhOf(V8 x) { return Splat8(2.0f) * SigmoidOf(Splat8(2.0f) * x) - Splat8(1.0f); }

// gates[s] (4 units floats each: the 4 gates) = projected[s] + h[s] @ recurrent, for S
// streams and P panels at a time: each weight read serves S streams, and S x 2P running sums
// keep the adds' latency hidden
template <int S, int P>
inline void GatesOf(const float *panels, const float *projected, float *const *h, int units,
                    float *broadcast, float *gates) {
  const int vectors = units / 2;
  // each state value as eight copies, made once (broadcast: units x S x 8 floats)
  for (int i = 0; i < units; ++i) {
    for (int s = 0; s < S; ++s) Store8(broadcast + (int64_t(i) * S + s) * 8, Splat8(h[s][i]));
  }
  for (int j0 = 0; j0 < vectors; j0 += 2 * P) {
    V8 a[S][2 * P];
    for (int s = 0; s < S; ++s) {
      for (int v = 0; v < 2 * P; ++v) {
        a[s][v] = Load8(projected + int64_t(s) * 4 * units + 8 * (j0 + v));
      }
    }
    const float *w = panels + int64_t(j0) * units * 8;
    const float *b = broadcast;
    for (int i = 0; i < units; ++i, w += 16, b += S * 8) {
      for (int p = 0; p < P; ++p) {
        const float *panel = w + int64_t(p) * units * 16;
        const V8 w0 = Load8(panel), w1 = Load8(panel + 8);
        for (int s = 0; s < S; ++s) {
          const V8 hs = Load8(b + s * 8);
          a[s][2 * p] += hs * w0;
          a[s][2 * p + 1] += hs * w1;
        }
      }
    }
    for (int s = 0; s < S; ++s) {
      for (int v = 0; v < 2 * P; ++v) Store8(gates + (int64_t(s) * vectors + j0 + v) * 8, a[s][v]);
    }
  }
}

// One stream's cell from its gates: h and c moved in place; returns its speech probability.
inline float UpdateOf(const float *g, float *h, float *c, const float *out, float out_bias,
                      int units) {
  const int q = units / 8;  // vectors per gate
  V8 logit = Splat8(0.0f);
  for (int v = 0; v < q; ++v) {
    const V8 in = SigmoidOf(Load8(g + 8 * v)), forget = SigmoidOf(Load8(g + 8 * (q + v)));
    const V8 output = SigmoidOf(Load8(g + 8 * (2 * q + v)));
    const V8 cell = TanhOf(Load8(g + 8 * (3 * q + v)));
    const V8 c_new = forget * Load8(c + 8 * v) + in * cell;
    const V8 h_new = output * TanhOf(c_new);
    Store8(c + 8 * v, c_new);
    Store8(h + 8 * v, h_new);
    logit += Select8(h_new > Splat8(0.0f), h_new, Splat8(0.0f)) * Load8(out + 8 * v);
  }
  float sum = out_bias;
  for (int lane = 0; lane < 8; ++lane) sum += logit[lane];
  return SigmoidOf(Splat8(sum))[0];
}

STREAMTAG_CLONES
void RunSteps(const float *panels, const float *out, float out_bias, int units,
              const float *projected, const int64_t *counts, int64_t steps,
              const uint8_t *reset, float *state, int64_t streams, float *probs) {
  float *hs = state, *cs = state + streams * units;
  // a block's gates (4 units a stream) and its state values broadcast (8 copies each)
  std::vector<float> gates(size_t(kStreamBlock) * 4 * units);
  std::vector<float> broadcast(size_t(kStreamBlock) * 8 * units);
  int64_t row = 0;
  for (int64_t k = 0; k < steps; ++k) {
    for (int64_t s0 = 0; s0 < counts[k]; s0 += kStreamBlock) {
      const int count = int(std::min<int64_t>(kStreamBlock, counts[k] - s0));
      float *h[kStreamBlock];
      for (int s = 0; s < count; ++s) {
        h[s] = hs + (s0 + s) * units;
        if (reset[row + s]) {
          std::memset(h[s], 0, sizeof(float) * units);
          std::memset(cs + (s0 + s) * units, 0, sizeof(float) * units);
        }
      }
      const float *p = projected + row * 4 * units;
      float *g = gates.data(), *b = broadcast.data();
      switch (count) {  // panels at a time: units / 16 of them, even but maybe not 4 times
        case 4: GatesOf<4, 1>(panels, p, h, units, b, g); break;
        case 3: GatesOf<3, 1>(panels, p, h, units, b, g); break;
        case 2: GatesOf<2, 2>(panels, p, h, units, b, g); break;
        default: GatesOf<1, 2>(panels, p, h, units, b, g); break;
      }
      for (int s = 0; s < count; ++s) {
        probs[row + s] = UpdateOf(g + int64_t(s) * 4 * units, h[s], cs + (s0 + s) * units, out,
                                  out_bias, units);
      }
      row += count;
    }
  }
}

template <V8 (*F)(V8)>
void Apply(const float *x, int64_t n, float *out) {
  for (int64_t i = 0; i < n; i += 8) {
    float lanes[8] = {};
    std::memcpy(lanes, x + i, sizeof(float) * std::min<int64_t>(8, n - i));
    const V8 y = F(Load8(lanes));
    std::memcpy(out + i, &y, sizeof(float) * std::min<int64_t>(8, n - i));
  }
}

}  // namespace

void ApproximateExp(const float *x, int64_t n, float *out) { Apply<ExpOf>(x, n, out); }
void ApproximateSigmoid(const float *x, int64_t n, float *out) { Apply<SigmoidOf>(x, n, out); }
void ApproximateTanh(const float *x, int64_t n, float *out) { Apply<TanhOf>(x, n, out); }

LstmDecoder::LstmDecoder(const std::vector<float> &recurrent, const std::vector<float> &out,
                         float out_bias, int units)
    : units_(units), out_(out), out_bias_(out_bias) {
  if (units <= 0 || units % 32 != 0 || units > kMaxUnits ||
      recurrent.size() != size_t(units) * 4 * units || out.size() != size_t(units)) {
    throw std::invalid_argument(
        "an LSTM decoder needs units (a positive multiple of 32, at most 512), recurrent "
        "weights of units x 4 units and units output weights; got units " +
        std::to_string(units) + ", " + std::to_string(recurrent.size()) + " recurrent and " +
        std::to_string(out.size()) + " output weights");
  }
  const int vectors = units / 2;
  panels_.reserve(size_t(vectors) * units * 8);
  for (int j0 = 0; j0 < vectors; j0 += 2) {
    for (int i = 0; i < units; ++i) {
      const float *from = &recurrent[size_t(i) * units * 4 + size_t(j0) * 8];
      panels_.insert(panels_.end(), from, from + 16);
    }
  }
}

void LstmDecoder::Run(const float *projected, const int64_t *counts, int64_t steps,
                      const uint8_t *reset, float *state, int64_t streams, float *probs) const {
  for (int64_t k = 0; k < steps; ++k) {
    if (counts[k] < 0 || counts[k] > streams || (k > 0 && counts[k] > counts[k - 1])) {
      throw std::invalid_argument("each step's stream count must be within the streams and "
                                  "never rise from step to step");
    }
  }
  RunSteps(panels_.data(), out_.data(), out_bias_, units_, projected, counts, steps, reset,
           state, streams, probs);
}

}  // namespace streamtag
