#include "pitch_track.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "simd.h"

namespace streamtag {

using simd::V4;

void PitchFrame(const double *frame, float *row) {
  constexpr int W = kPitchFrame;
  double mean = 0.0;
  for (int j = 0; j < W; ++j) mean += frame[j];
  mean /= W;
  // x: the frame less its mean. energy[j]: the power of x[0..j), in double; product[t]: the sum
  // over j of x[j] x[j + t], in float, four lags to a vector (each lag its own sum over j in
  // order), x zero past its end
  double energy[W + 1];
  energy[0] = 0.0;
  constexpr int kLanes = 4;
  constexpr int kVectors = (kPitchMaxLag + kLanes - 1) / kLanes;  // lags 1 .. 4 * kVectors
  float xf[W + kLanes * kVectors + 1] = {};
  for (int j = 0; j < W; ++j) {
    const double x = frame[j] - mean;
    energy[j + 1] = energy[j] + x * x;
    xf[j] = static_cast<float>(x);
  }
  V4 sums[kVectors];
  for (V4 &v : sums) v = simd::Splat(0.0f);
  for (int j = 0; j < W; ++j) {
    const V4 xj = simd::Splat(xf[j]);
    const float *ahead = xf + j + 1;
    for (int v = 0; v < kVectors; ++v) sums[v] += xj * simd::Load(ahead + kLanes * v);
  }
  double product[kLanes * kVectors + 1];
  for (int v = 0; v < kVectors; ++v) {
    for (int lane = 0; lane < kLanes; ++lane) product[1 + kLanes * v + lane] = sums[v][lane];
  }
  const double power = energy[W];
  // the cumulative mean normalised difference at lags 1 .. kPitchMaxLag (index 0 unused): the
  // difference d(t) is the power of x[0..W-t) and of x[t..W) less twice their product
  double normalised[kPitchMaxLag + 1];
  double running = 0.0;
  for (int lag = 1; lag <= kPitchMaxLag; ++lag) {
    const double d = energy[W - lag] + (energy[W] - energy[lag]) - 2.0 * product[lag];
    running += d;
    normalised[lag] = running > 1e-12 ? d * lag / running : d * lag / 1e-12;
  }
  int at = -1, lowest = kPitchMinLag;
  for (int lag = kPitchMinLag; lag <= kPitchMaxLag; ++lag) {
    if (at < 0 && normalised[lag] < kPitchYinThreshold) at = lag;
    if (normalised[lag] < normalised[lowest]) lowest = lag;
  }
  if (at < 0) {
    at = lowest;
  } else {
    while (at < kPitchMaxLag && normalised[at + 1] < normalised[at]) ++at;
  }
  double period = at;
  if (at > kPitchMinLag && at < kPitchMaxLag) {
    const double y0 = normalised[at - 1], y1 = normalised[at], y2 = normalised[at + 1];
    const double curve = y0 - 2.0 * y1 + y2;
    if (curve > 0) period += 0.5 * (y0 - y2) / curve;
  }
  row[kPitchSemitones] = static_cast<float>(12.0 * std::log2(kPitchRate / period / 100.0));
  row[kPitchDifference] =
      power > kPitchSilentPower * W ? static_cast<float>(normalised[at]) : 1.0f;
  row[kPitchLevelDb] = static_cast<float>(10.0 * std::log10(power / W + 1e-12));
}

int PitchFramesPerBlock(int length) {
  if (length % 2 != 0 || length < 2 * kPitchFrame) {
    throw std::invalid_argument("a pitch block must hold an even number of 16-kHz samples, at "
                                "least " + std::to_string(2 * kPitchFrame));
  }
  return (length / 2 - kPitchFrame) / kPitchHop + 1;
}

void PitchFrames(const float *blocks, int64_t n, int length, float *rows) {
  const int frames = PitchFramesPerBlock(length);
  if (n < 0) throw std::invalid_argument("a negative count of pitch blocks");
  std::vector<double> half(length / 2);
  for (int64_t i = 0; i < n; ++i) {
    const float *block = blocks + i * length;
    for (int j = 0; j < length / 2; ++j) {
      half[j] = 0.5 * (static_cast<double>(block[2 * j]) + static_cast<double>(block[2 * j + 1]));
    }
    for (int f = 0; f < frames; ++f) {
      PitchFrame(half.data() + f * kPitchHop, rows + (i * frames + f) * kPitchRowSize);
    }
  }
}

}  // namespace streamtag
